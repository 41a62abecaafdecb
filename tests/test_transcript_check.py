"""The transcript check wired into the run (issue 17, ``--verify transcribe``): each part heard through the
endpoint's ``/audio/transcriptions``, compared with its text, made again when words are missing; transcripts kept
by part; the plan and the report say what it costs.

Against the fake server, which knows what each answer really says (a dropped sentence, a lie) and transcribes it
with a good recogniser's seeded noise."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline import app
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.models import BackendOptions
from pipeline.store import Stores
from pipeline.tts.registry import Synthesizers
from pipeline.tts.transcribe import expected_minutes, governor_key, transcription_cost
from tests.fakeserver import LIES, TRANSCRIPTIONS, FakeSpeechServer, Fault
from tests.helpers import FAKE_KEY, read_report, write_book


def convert(book: Path, out: Path, cache: Path, *extra: str) -> int:
    return main(
        ["--quiet", "convert", str(book), "-o", str(out), "--cache-dir", str(cache), "--timeout", "5",
         "--no-titles", "--no-pack", "--verify", "transcribe", *extra]
    )  # fmt: skip


def speech(srv: FakeSpeechServer) -> list[str]:
    return [r.input or "" for r in srv.requests if r.path != TRANSCRIPTIONS]


def heard(srv: FakeSpeechServer) -> int:
    return sum(1 for r in srv.requests if r.path == TRANSCRIPTIONS and r.status == 200)


def durations(out: Path) -> list[float]:
    return [c["duration_s"] for c in read_report(out)["chapters"]]


def test_a_clean_run_heard_makes_nothing_again_and_a_rerun_pays_for_no_transcript(
    human: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=5, sentences=4)
    assert convert(book, tmp_path / "a", tmp_path / "cache") == 0
    report = read_report(tmp_path / "a")
    parts = len(speech(human))
    assert report["status"] == "done" and report["requests"] == parts  # 0 false alarms: nothing made again
    v = report["verification"]
    assert (v["mode"], v["verified"], v["remade"], v["suspect"]) == ("transcribe", parts, 0, 0)
    assert v["transcriptions"] == parts == heard(human)  # one a part
    assert v["transcription_cost_usd"] > 0
    for chapter in report["chapters"]:
        assert 0.75 <= chapter["coverage_min"] <= chapter["coverage_mean"] <= 1.0
    # Another output, the same cache: every part checked again, from its kept measure and transcript.
    human.clear()
    assert convert(book, tmp_path / "b", tmp_path / "cache") == 0
    again = read_report(tmp_path / "b")
    assert human.requests == [] and again["verification"]["transcriptions"] == 0
    assert again["verification"]["verified"] == parts and again["status"] == "done"


def test_dropped_sentences_and_lies_are_all_caught_and_made_again(human: FakeSpeechServer, tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=7, sentences=4)
    assert convert(book, tmp_path / "clean", tmp_path / "c1") == 0
    texts = speech(human)
    human.clear()
    for kind in LIES:
        human.lie(kind, 0.05, seed=5)
    # Some 5 % of the parts leave out a sentence (their first answer only), as speech models sometimes do.
    dropped = set(texts[3::20])
    human.inject_for(lambda body: body.get("input") in dropped, Fault.drop_sentence(), times=len(dropped))
    assert convert(book, tmp_path / "lied", tmp_path / "c2") == 0
    faulty = [r for r in human.requests if r.path != TRANSCRIPTIONS and r.fault is not None]
    told = {kind: sum(1 for r in faulty if r.fault == kind) for kind in (*LIES, "drop_sentence")}
    assert all(told.values()), told
    report = read_report(tmp_path / "lied")
    v = report["verification"]
    # 100 % caught: each faulty answer made again once, the fresh ones answered truly, none left suspect.
    assert v["remade"] == len(faulty) and v["suspect"] == 0 and report["status"] == "done"
    assert len(speech(human)) == len(texts) + len(faulty)
    asked = Counter(speech(human))  # each faulty answer's text asked twice, every other text once
    assert asked == Counter(texts + [r.input or "" for r in faulty])
    for got, want in zip(durations(tmp_path / "lied"), durations(tmp_path / "clean"), strict=True):
        assert abs(got - want) <= 0.01 * want


def test_a_failed_transcription_leaves_its_part_unverified_not_made_again(
    human: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_backoff: list[float]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=3, sentences=3)
    # Three parts, each heard with one retry: six 500s fail every hearing, in whatever order they interleave.
    human.inject_transcription(*[Fault.status(500)] * 6)
    assert convert(book, tmp_path / "out", tmp_path / "cache", "--max-retries", "1") == 3
    report = read_report(tmp_path / "out")
    parts = report["verification"]["suspects"]
    assert len(parts) == 3 and all(p["tries"] == 1 for p in parts)
    assert all(p["reasons"][0].startswith("unverified (transcription failed:") for p in parts)
    assert report["verification"]["remade"] == 0 and len(speech(human)) == 3  # not suspect: not made again
    assert [c["status"] for c in report["chapters"]] == ["done"]
    err = capsys.readouterr().err.strip().splitlines()
    assert sum("stopping the transcript check: 3 transcriptions in a row failed" in line for line in err) == 1
    assert "3 parts unverified" in err[-1]


def test_a_refused_key_stops_the_hearing_at_once(
    human: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=8, sentences=3)
    human.inject_transcription(Fault.status(401))
    assert convert(book, tmp_path / "out", tmp_path / "cache", "--concurrency", "1") == 3
    err = capsys.readouterr().err
    assert err.count("stopping the transcript check") == 1
    # No request burnt after the refusal: the one sent before it was answered, at most, besides.
    assert sum(1 for r in human.requests if r.path == TRANSCRIPTIONS) <= 2
    report = read_report(tmp_path / "out")
    assert report["verification"]["suspect"] == 8 and report["verification"]["remade"] == 0
    assert all("transcription" in p["reasons"][0] for p in report["verification"]["suspects"])


def test_the_plan_shows_the_transcription_requests_and_their_cost(
    human: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=3, sentences=4)
    args = ["convert", str(book), "-o", str(tmp_path / "out"), "--verify", "transcribe", "--no-pack", "--dry-run"]
    assert main([*args, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    v = plan["verify"]
    minutes = expected_minutes(plan["characters_to_send"])
    assert v["transcriptions"] == plan["requests_needed"] > 0
    assert v["transcription_cost_usd"] == round(minutes * 0.003, 4)  # gpt-4o-mini-transcribe, by the minute
    assert main(args) == 0
    assert f"{plan['requests_needed']} transcription requests (one a part)" in capsys.readouterr().out
    assert human.requests == []


def test_transcriptions_go_through_a_governor_of_their_own(human: FakeSpeechServer, tmp_path: Path) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=1, sentences=2)
    settings = load_settings(None, overrides={"verify": "transcribe", "transcribe_rpm": 30})
    plan = app.plan(app.read(book, settings.book), settings, tmp_path / "out")
    synths = Synthesizers(4, env={"OPENAI_API_KEY": FAKE_KEY})
    stores = Stores()
    hook = app._transcribers([plan], synths, stores, {"OPENAI_API_KEY": FAKE_KEY})
    assert hook is not None
    request = next(iter(plan.needed))
    from pipeline.models import PartRequest

    client = hook(PartRequest(request, "x", plan.options.voice_spec, plan.backend, plan.store, verify=True))
    assert client is not None
    backend: BackendOptions = plan.backend
    own = synths.governors[governor_key(backend, {"OPENAI_API_KEY": FAKE_KEY})]
    assert client.governor is own and own is not synths.governor(backend)
    assert own.stats().limit_rpm == 30
    assert transcription_cost(backend, 1.0) == 0.003


def test_the_offline_voice_says_once_it_cannot_be_heard_and_runs_the_timing_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=3, sentences=2)
    out = tmp_path / "out"
    args = ["convert", str(book), "-o", str(out), "--backend", "espeak", "--verify", "transcribe", "--no-titles"]
    assert main([*args, "--dry-run", "--json"]) == 0
    assert "transcriptions" not in json.loads(capsys.readouterr().out)["verify"]  # nothing to pay for
    assert main(["--quiet", *args, "--cache-dir", str(tmp_path / "cache")]) == 0
    err = capsys.readouterr().err
    assert err.count("the espeak backend cannot transcribe; timing check only") == 1
    report = read_report(out)
    v = report["verification"]
    assert report["status"] == "done" and v["verified"] == report["synthesized"] == 3 and v["transcriptions"] == 0
    assert [c["coverage_min"] for c in report["chapters"]] == [None]
