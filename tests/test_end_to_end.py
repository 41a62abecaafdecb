"""The whole program against the fake OpenAI speech server: real HTTP, real MP3, real files on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from pipeline import mp3
from pipeline.chunker import chunk_chapter
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.media import ffmpeg_exe
from pipeline.planning import plan_book
from pipeline.readers import read_book
from pipeline.store import FileStore
from pipeline.titles import spoken_title
from tests.audiocheck import decode
from tests.conftest import corpus_file
from tests.fakeserver import FakeSpeechServer, Fault
from tests.helpers import FAKE_KEY as KEY
from tests.helpers import REPO, read_report, run_cli, write_book
from tests.helpers import child_env as make_child_env


def convert(book: Path, out: Path, *extra: str) -> int:
    return main(["--quiet", "convert", str(book), "-o", str(out), "--timeout", "2", *extra])


def expected_ms(segments, settings, ms_per_char: float) -> float:
    """What a chapter's length must be: the server's audio for each segment plus our pauses and padding."""
    pauses = {
        "sentence": settings.book.sentence_pause_ms,
        "paragraph": settings.book.paragraph_pause_ms,
        "title": settings.book.title_pause_ms,
        "end": 0,
    }
    speech = sum(max(2, round(len(s.text) * ms_per_char / 24)) * 24 for s in segments)
    return speech + sum(pauses[s.pause_after.value] for s in segments) + 2 * settings.book.chapter_pad_ms


def test_corpus_book_with_faults_is_complete_in_order_and_paid_once(
    server: FakeSpeechServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    book_path = corpus_file("alice-pg11.txt")
    settings = load_settings()
    book = read_book(book_path)
    # What the run sends: titles as a voice says them ("Chapter 2", not "CHAPTER II."), sentences packed.
    said = [dataclasses.replace(c, title=spoken_title(c.title, book.language)) for c in book.chapters]
    segments = [chunk_chapter(c, settings.book.max_chars, announce_title=True) for c in said]
    # A relay's whole repertoire of bad days, spread over the run.
    server.inject(
        Fault.rate_limit(retry_after=3),
        Fault.status(500),
        Fault.drop(),
        Fault.status(502),
        Fault.json_200(),
        Fault.status(503),
        Fault.empty_200(),
        Fault.garbage_200(),
    )
    server.inject_for(lambda body: body["input"].startswith("Alice was beginning"), Fault.slow(3.0), times=1)

    assert convert(book_path, tmp_path / "out", "--concurrency", "8") == 0

    report = read_report(tmp_path / "out")
    assert report["status"] == "done"
    assert [c["title"] for c in report["chapters"]] == [c.title for c in book.chapters]
    assert len(report["chapters"]) == 12
    # Every distinct segment was paid for exactly once, and nothing else was.
    served = Counter(server.served_inputs())
    wanted = {s.text for chapter in segments for s in chapter}
    assert set(served) == wanted
    assert max(served.values()) == 1
    # Every character of every chapter is in its segments, in order (titles are spoken in addition).
    for chapter, segs in zip(book.chapters, segments, strict=True):
        body = [s.text for s in segs if s.pause_after.value != "title"]
        assert "".join(body).replace(" ", "").replace("\n", "") == chapter.text.replace(" ", "").replace("\n", "")
    assert len(no_backoff) == 8  # one backoff per retried fault; the 429's pause was the governor's
    # Seven injected faults and one answer slower than the timeout were retried; the 429 was waited out in the
    # rate governor, which is no failed attempt.
    assert report["retries"] == 8 and report["rate"]["rate_limited"] == 1
    assert report["rate"]["waited_s"] >= 3.0  # the Retry-After header was obeyed
    assert report["requests"] == len(wanted) + 8
    files = sorted((tmp_path / "out").glob("*.mp3"))
    assert [f.name for f in files] == [c["file"] for c in report["chapters"]]
    assert files[0].name.startswith("01 ") and files[-1].name.startswith("12 ")
    for f, segs in zip(files, segments, strict=True):
        got = len(decode(f.read_bytes()))
        want = expected_ms(segs, settings, server.ms_per_char)
        assert abs(got - want) < 0.01 * want + 150, f.name
    tags = ID3(files[1])
    assert tags["TRCK"].text[0] == "2/12"
    assert tags["TALB"].text[0] == book.title
    assert "Pool of Tears" in tags["TIT2"].text[0]
    assert (tmp_path / "out" / report["playlist"]).read_text(encoding="utf-8").count(".mp3") == 12


def test_second_identical_run_sends_nothing_and_rewrites_nothing(server: FakeSpeechServer, tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt")
    assert convert(book, tmp_path / "out") == 0
    first = server.requests
    durations = [c["duration_s"] for c in read_report(tmp_path / "out")["chapters"]]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp3")}
    assert convert(book, tmp_path / "out") == 0
    assert server.requests == first
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp3")} == stamps
    assert [c["status"] for c in read_report(tmp_path / "out")["chapters"]] == ["unchanged"] * 3
    assert [c["duration_s"] for c in read_report(tmp_path / "out")["chapters"]] == durations
    # A fresh output folder still costs nothing: the parts are in the shared cache.
    assert convert(book, tmp_path / "elsewhere") == 0
    assert server.requests == first
    assert len(list((tmp_path / "elsewhere").glob("*.mp3"))) == 3


def test_dry_run_sends_nothing_and_shows_the_plan(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2)
    assert main(["plan", str(book), "-o", str(tmp_path / "out"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert server.requests == []
    assert not (tmp_path / "out").exists()
    assert [c["title"] for c in plan["chapters"]] == ["Chapter 1. The Stone", "Chapter 2. The Lantern"]
    assert plan["requests_needed"] == plan["segments"] > 0
    assert plan["estimated_cost_usd"] > 0
    assert convert(book, tmp_path / "out") == 0
    assert main(["convert", str(book), "-o", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "To send:  0 requests" in text and "current" in text


def test_a_segment_that_keeps_failing_names_itself_and_leaves_no_hole(
    server: FakeSpeechServer, tmp_path: Path, no_backoff: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt")
    doomed = "Sentence 41 "
    server.inject_for(lambda body: doomed in body["input"], Fault.status(500))
    out = tmp_path / "out"
    assert convert(book, out, "--max-retries", "2") == 1
    err = capsys.readouterr().err
    assert "chapter 2" in err and "segment" in err and "500" in err
    report = read_report(out)
    assert report["status"] == "failed"
    assert [c["status"] for c in report["chapters"]] == ["done", "failed", "done"]
    assert report["failures"][0]["chapter"] == 2 and report["failures"][0]["text"].startswith("Sentence ")
    assert sorted(p.name[:2] for p in out.glob("*.mp3")) == ["01", "03"]  # no chapter with a hole in it
    assert not list(out.glob("*.m3u")) and not list(out.glob("*.part"))
    assert sum(1 for r in server.requests if r.input and doomed in r.input) == 3
    # The server recovers; the rerun pays only for the missing segment.
    served_before = len(server.served_inputs())
    server.clear()
    assert convert(book, out) == 0
    assert len(server.requests) == 1 and doomed in (server.requests[0].input or "")
    assert len(server.served_inputs()) == 1 and served_before > 1
    assert len(list(out.glob("*.mp3"))) == 3 and len(list(out.glob("*.m3u"))) == 1


def test_fatal_errors_stop_early_with_the_servers_message(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=4, paragraphs=10)
    server.inject_for(lambda body: True, Fault.quota())
    assert convert(book, tmp_path / "out", "--concurrency", "4") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "quota" in err[-1].lower() and "Traceback" not in "\n".join(err)
    assert len(server.requests) <= 4  # only what was already in flight, not one per segment


def test_the_advice_to_run_again_comes_only_when_a_rerun_can_succeed(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_backoff: list[float]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=6)
    server.inject_for(lambda body: True, Fault.bad_request("Invalid value for 'voice': 'bogus'."))
    assert convert(book, tmp_path / "out", "--concurrency", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Invalid value for 'voice'" in err and "run the same command again" not in err
    assert "kept for when that is fixed" in err

    server.clear()  # a server that is down for now: the same command later finishes the book
    server.inject_for(lambda body: True, Fault.status(503))
    assert convert(book, tmp_path / "out", "--concurrency", "1", "--max-retries", "0") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "3 segments in a row failed" in err and "run the same command again" in err
    server.clear()
    assert convert(book, tmp_path / "out") == 0


def test_wrong_key_is_one_line_exit_1_and_the_key_never_leaks(
    server: FakeSpeechServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "sk-wrong-SECRET-9876543210zyxwvutsrqponmlk"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    book = write_book(tmp_path / "book.txt")
    assert main(["convert", str(book), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "401" in captured.err or "key" in captured.err.lower()
    assert len(server.requests) <= load_settings().run.concurrency
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert convert(book, tmp_path / "out", "--subtitles", "srt") == 0
    captured2 = capsys.readouterr()
    everything = captured.out + captured.err + captured2.out + captured2.err
    for root in (tmp_path, Path(os.environ["XDG_CACHE_HOME"])):
        for p in root.rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert KEY.encode() not in data and wrong.encode() not in data, p
    assert KEY not in everything and wrong not in everything


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["convert", "{book}", "-o", "{out}"], {}, "OPENAI_API_KEY"),
        (["convert", "{missing}", "-o", "{out}"], {"OPENAI_API_KEY": "k"}, "no such file"),
        (["convert", "{empty}", "-o", "{out}"], {"OPENAI_API_KEY": "k"}, "no text"),
        (["convert", "{book}", "--speed", "9"], {"OPENAI_API_KEY": "k"}, "speed"),
        (["convert", "{book}", "--config", "{missing}"], {}, "config file not found"),
        (["convert"], {}, "required"),
        (["convert", "{book}", "--concurrency", "lots"], {}, "invalid int"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1)
    (tmp_path / "empty.txt").write_text("  \n\n \ufeff", encoding="utf-8")
    names = {
        "book": book,
        "missing": tmp_path / "nope.txt",
        "empty": tmp_path / "empty.txt",
        "out": tmp_path / "o",
    }
    proc = run_cli(*[a.format(**names) for a in args], env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audiobook: error:"), proc.stderr
    assert needle.lower() in lines[0].lower()


def test_unreachable_server_is_a_clear_failure(tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=2)
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # discard port: refused
    proc = run_cli("convert", str(book), "-o", str(tmp_path / "o"), "--max-retries", "0", env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "127.0.0.1:9" in proc.stderr.strip().splitlines()[-1]


def test_killed_run_resumes_without_paying_twice(tmp_path: Path) -> None:
    """SIGKILL a real conversion mid-way; the rerun finishes the same book and pays only for the rest."""
    book = write_book(tmp_path / "book.txt", chapters=4, paragraphs=30, sentences=2)
    cache = tmp_path / "cache"
    with FakeSpeechServer(api_key=KEY, latency=0.05, ms_per_char=4.0) as srv:
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": srv.url, "AUDIOBOOK_CACHE_DIR": str(cache)}
        full = [
            sys.executable,
            "-m",
            "pipeline",
            "convert",
            str(book),
            "-o",
            str(tmp_path / "out"),
            "--concurrency",
            "4",
        ]
        child_env = make_child_env(env)
        child = subprocess.Popen(full, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(srv.served_inputs()) < 40 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        settings = load_settings(env=env)
        plan = plan_book(read_book(book), settings, tmp_path / "out", FileStore(cache))
        texts = {s.text: k for c in plan.chapters for s, k in zip(c.segments, c.keys, strict=True)}
        cached = {t for t, k in texts.items() if FileStore(cache).has(k)}
        assert 20 <= len(cached) < len(texts)  # answers in flight when killed were never stored
        srv.clear()

        proc = run_cli(*full[3:], env=env)
        assert proc.returncode == 0, proc.stderr
        second = [r.input for r in srv.requests]
        assert not cached & set(second)  # no finished segment was requested again
        assert set(second) == set(texts) - cached
        report = read_report(tmp_path / "out")
        assert report["status"] == "done" and len(list((tmp_path / "out").glob("*.mp3"))) == 4

    # The same output as a run that was never interrupted.
    proc = run_cli(*full[3:5], "-o", str(tmp_path / "ref"), env={**env, "OPENAI_BASE_URL": srv.url})
    assert proc.returncode == 0, proc.stderr  # all cached: the stopped server is never contacted
    for a, b in zip(sorted((tmp_path / "out").glob("*.mp3")), sorted((tmp_path / "ref").glob("*.mp3")), strict=True):
        assert a.name == b.name
        assert abs(len(decode(a.read_bytes())) - len(decode(b.read_bytes()))) <= 30


def test_local_backend_and_local_server(tmp_path: Path) -> None:
    """The offline engine directly, and the same engine behind `audiobook serve` reached via OPENAI_BASE_URL."""
    sample = REPO / "samples" / "the-lantern-keeper.md"
    proc = run_cli("convert", str(sample), "-o", str(tmp_path / "direct"), "--backend", "local")
    assert proc.returncode == 0, proc.stderr
    report = read_report(tmp_path / "direct")
    durations = {c["title"]: c["duration_s"] for c in report["chapters"]}
    chars = {c["title"]: c["characters"] for c in report["chapters"]}
    assert len(durations) == 4 and all(d > 5 for d in durations.values())
    # Longer chapters are longer speech, in English and in Chinese alike.
    assert durations["A Light Made of Voices"] > durations["Epilogue"] * 2
    assert chars["灯塔守护人"] < chars["Epilogue"] * 2 and durations["灯塔守护人"] > 10

    from pipeline.server import make_server

    with make_server("127.0.0.1", 0, api_key="local-key").start() as srv:
        env = {
            "OPENAI_BASE_URL": srv.url,
            "OPENAI_API_KEY": "local-key",
            "AUDIOBOOK_CACHE_DIR": str(tmp_path / "c"),
        }
        proc = run_cli("convert", str(sample), "-o", str(tmp_path / "served"), "--concurrency", "4", env=env)
        assert proc.returncode == 0, proc.stderr
    served = read_report(tmp_path / "served")
    assert served["status"] == "done" and served["requests"] == served["plan"]["segments"]
    for c in served["chapters"]:
        assert abs(c["duration_s"] - durations[c["title"]]) < 0.15 * durations[c["title"]]


def test_a_damaged_cached_part_fails_its_chapter_once_then_is_fetched_again(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2)
    assert convert(book, tmp_path / "first") == 0
    store = FileStore(Path(os.environ["XDG_CACHE_HOME"]) / "audiobook-pipeline")
    plan = plan_book(read_book(book), load_settings(), tmp_path / "second", store)
    victim = plan.chapters[1].keys[2]
    part = store.path(victim)
    assert part.is_file()
    part.write_bytes(b"\xff\xfb" + b"\x00" * 50)  # looks like MP3 at a glance, does not decode
    server.clear()

    assert convert(book, tmp_path / "second") == 1
    err = capsys.readouterr().err
    assert "chapter 2" in err.lower() and "run the same command again" in err
    report = read_report(tmp_path / "second")
    assert [c["status"] for c in report["chapters"]] == ["done", "failed"]
    assert not part.exists() and server.requests == []  # dropped from the cache, nothing paid yet

    assert convert(book, tmp_path / "second") == 0
    assert [r.input for r in server.requests] == [plan.chapters[1].segments[2].text]
    assert len(list((tmp_path / "second").glob("*.mp3"))) == 2


def test_outputs_follow_the_settings_and_an_unchanged_m4b_is_not_rebuilt(
    server: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2)
    out = tmp_path / "out"
    assert convert(book, out, "--m4b", "--subtitles", "srt") == 0
    (m4b,) = out.glob("*.m4b")
    built = m4b.stat().st_mtime_ns
    assert len(list(out.glob("MP3/*.srt"))) == 2  # --m4b is --format both: the chapter files in MP3/
    assert convert(book, out, "--m4b", "--subtitles", "srt") == 0
    assert m4b.stat().st_mtime_ns == built  # same chapters: the M4B is current
    # Other settings: what no longer matches the audio goes, nothing else does.
    (out / "notes.txt").write_text("mine")
    assert convert(book, out, "--subtitles", "vtt", "-q") == 0
    assert not m4b.exists() and not list(out.glob("**/*.srt")) and not (out / "MP3").exists()
    assert len(list(out.glob("*.vtt"))) == 2 and (out / "notes.txt").exists()
    library = ["cover.jpg", "metadata.json", "metadata.opf", "reader.txt"]
    assert sorted(p.name for p in out.iterdir() if p.suffix not in (".mp3", ".vtt")) == sorted(
        ["report.json", "Book.m3u", "notes.txt", *library]
    )
    assert sorted(p.suffix for p in out.iterdir() if p.name not in library) == [
        *[".json", ".m3u", ".mp3", ".mp3", ".txt", ".vtt", ".vtt"]
    ]


def test_an_unwritable_cache_fails_before_any_request(server: FakeSpeechServer, tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1)
    (tmp_path / "afile").write_text("not a folder")
    assert convert(book, tmp_path / "out", "--cache-dir", str(tmp_path / "afile")) == 2
    assert server.requests == []


def test_a_sentence_repeated_in_a_chapter_is_paid_once_and_the_chapter_built_once(
    server: FakeSpeechServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import assembly

    built: list[str] = []
    real = assembly.assemble_chapter

    def counting(*args: object, **kwargs: object) -> object:
        built.append(args[1].title)  # type: ignore[attr-defined]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(assembly, "assemble_chapter", counting)
    book = tmp_path / "refrain.txt"
    book.write_text("Chapter 1: Refrain\n\nOh dear!\n\nThe rabbit ran.\n\nOh dear!\n", encoding="utf-8")
    assert convert(book, tmp_path / "out", "--no-titles", "--no-pack") == 0  # a part per paragraph
    assert sorted(r.input for r in server.requests) == ["Oh dear!", "The rabbit ran."]
    assert built == ["Chapter 1. Refrain"]
    report = read_report(tmp_path / "out")
    assert report["chapters"][0]["segments"] == 3 and report["status"] == "done"


def test_quiet_prints_nothing_on_success_and_every_command_describes_itself(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2)
    assert main(["convert", str(book), "-o", str(tmp_path / "loud")]) == 0
    assert "01 Chapter 1" in capsys.readouterr().out
    assert main(["convert", str(book), "-o", str(tmp_path / "quiet"), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    for command in ("convert", "plan", "batch", "voices", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        usage = capsys.readouterr().out
        description = usage.split("\n\n")[1]
        assert not description.startswith(("positional", "options")), f"{command} --help has no description"


def test_an_answer_that_starts_like_audio_but_is_not_is_refused_on_arrival_and_never_cached(
    server: FakeSpeechServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2)
    server.inject(Fault.bad_audio_200(), Fault.truncated_200())  # the first two answers of the run
    assert convert(book, tmp_path / "out", "--concurrency", "1") == 0
    report = read_report(tmp_path / "out")
    assert report["status"] == "done" and report["retries"] == 2  # both retried at once, in the same run
    store = FileStore(Path(os.environ["XDG_CACHE_HOME"]) / "audiobook-pipeline")
    for part in (store.root / "parts").rglob("*.mp3"):
        mp3.check_part(part.read_bytes())  # every part kept is whole audio
    for chapter in report["chapters"]:
        proc = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "out" / chapter["file"]), "-f", "null", "-"],
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr == b""
