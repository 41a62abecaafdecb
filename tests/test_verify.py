"""Verification (issue 17): every part measured where it arrives, judged against the book's own speech rate,
made again when it does not sound like its text, and named in the report (exit 3) when it stays so.

Against the fake server speaking at a human rate (60 ms a character: about 14 non-space characters a second)
and with real speech from the offline voice."""

from __future__ import annotations

import array
import json
import math
import shutil
from pathlib import Path

import pytest

from pipeline import verify
from pipeline.cli import main
from pipeline.models import PartMeasure
from pipeline.transcript import compare
from tests.fakeserver import FakeSpeechServer
from tests.helpers import HUMAN_MS_PER_CHAR, REPO, read_report, write_book
from tests.test_object_store import bucket, endpoint  # noqa: F401  (fixtures: a bucket on moto)


def convert(book: Path, out: Path, *extra: str) -> int:
    return main(["--quiet", "convert", str(book), "-o", str(out), "--timeout", "5", "--no-titles", *extra])


def durations(out: Path) -> list[float]:
    return [c["duration_s"] for c in read_report(out)["chapters"]]


# --- measuring and judging ---------------------------------------------------------------------------------


def test_characters_are_counted_as_the_calibration_measured() -> None:
    assert verify.count_chars("Hello, world!") == (12, "latin")  # non-space, punctuation included
    assert verify.count_chars("今天天气很好，我们去公园。") == (11, "cjk")  # letters only: no punctuation
    # Mixed: the script of most letters; the other's characters weighted by how long they take to say.
    assert verify.count_chars("我今天学习了很多 Python。") == (8 + 2, "cjk")
    assert verify.count_chars("Say 你好 now") == (3 + 2 * 3 + 3, "latin")


def tone(seconds: float, rate: int = 24_000, level: int = 8000) -> bytes:
    return array.array("h", (int(level * math.sin(i / 7)) for i in range(int(seconds * rate)))).tobytes()


def test_voiced_time_and_silences_are_measured_in_20ms_frames() -> None:
    silence = bytes(2 * 24_000)  # 1 s
    pcm = bytes(2 * 4800) + tone(2.0) + silence * 3 + tone(1.0) + bytes(2 * 2400)
    m = verify.analyse(pcm, 24_000, 40, "latin")
    assert m.voiced_s == pytest.approx(3.0, abs=0.04)
    assert m.inner_silence_s == pytest.approx(3.0, abs=0.04)
    assert m.lead_s == pytest.approx(0.2, abs=0.02) and m.trail_s == pytest.approx(0.1, abs=0.02)
    assert m.duration_s == pytest.approx(6.3, abs=0.001)


def test_the_band_follows_the_books_own_rate_and_flags_what_is_far_outside_it() -> None:
    judge = verify.Judge()

    def part(voiced: float, chars: int = 200, inner: float = 0.4) -> PartMeasure:
        return PartMeasure(chars, "latin", voiced + 0.3, voiced, inner, 0.1, 0.2)

    # A voice at 12 characters a second, 25 % under the prior: the first parts pass in the warm-up band,
    # and from then on the estimate is the voice's own.
    for _ in range(12):
        assert judge.judge(part(200 / 12), "v", None).ok
    assert judge.expected_rate("v", "latin", None)[0] == pytest.approx(12.0)
    assert judge.judge(part(200 / 12 / 2), "v", None, learn=False).reasons == ("cut short",)
    assert judge.judge(part(200 / 12 * 3), "v", None, learn=False).reasons == ("runs on",)
    assert judge.judge(part(200 / 12, inner=4.0), "v", None, learn=False).reasons == ("4.0 s of silence inside",)
    # The silence limit scales with speed; another speed is another stream, seeded by the prior x speed.
    assert judge.judge(part(200 / 12, inner=2.0), "v", 1.5, learn=False).reasons[-1] == "2.0 s of silence inside"
    assert judge.expected_rate("v", "latin", 1.5)[0] == pytest.approx(24.0)


# --- against the fake server --------------------------------------------------------------------------------


def test_a_clean_run_makes_nothing_again_and_each_lie_is_caught_and_made_again(
    human: FakeSpeechServer, tmp_path: Path
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=3, paragraphs=6, sentences=5)
    assert convert(book, tmp_path / "clean", "--cache-dir", str(tmp_path / "c1"), "--no-pack") == 0
    clean = read_report(tmp_path / "clean")
    parts = len(human.requests)
    assert clean["status"] == "done" and clean["requests"] == parts  # 0 false alarms: nothing made again
    assert clean["verification"] == {
        "mode": "timing", "verified": parts, "remade": 0, "suspect": 0, "suspects": [],
        "transcriptions": 0, "transcription_cost_usd": 0.0,
    }  # fmt: skip
    assert sum(c["verified"] for c in clean["chapters"]) == parts and all(c["verified"] for c in clean["chapters"])

    human.clear()
    for kind in ("cut_short", "silence_middle", "run_on"):
        human.lie(kind, 0.1, seed=3)
    assert convert(book, tmp_path / "lied", "--cache-dir", str(tmp_path / "c2"), "--no-pack") == 0
    told = human.lies_told()
    assert all(count > 0 for count in told.values()), told
    lied = read_report(tmp_path / "lied")
    # Every lie caught and made again once; the fresh requests were answered truly.
    assert lied["status"] == "done"
    assert lied["verification"]["remade"] == sum(told.values()) and lied["verification"]["suspect"] == 0
    assert lied["requests"] == parts + sum(told.values())
    assert sum(c["remade"] for c in lied["chapters"]) == sum(told.values())
    for got, want in zip(durations(tmp_path / "lied"), durations(tmp_path / "clean"), strict=True):
        assert abs(got - want) <= 0.01 * want


def test_a_part_that_stays_bad_is_named_its_chapter_written_and_the_run_exits_3(
    human: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=3, sentences=4)
    # One paragraph of chapter 2 runs on every time it is asked.
    text = book.read_text().split("Chapter 2", 1)[1].split("\n\n")[1]
    human.lie("run_on", tries=99, only=text)
    code = convert(book, tmp_path / "out", "--no-pack")  # 2 fresh tries, by default
    assert code == 3
    report = read_report(tmp_path / "out")
    assert report["status"] == "unverified"  # never "done" with an unverified part
    (suspect,) = report["verification"]["suspects"]
    assert suspect["chapter"] == 2 and suspect["reasons"] == ["runs on"] and suspect["tries"] == 3
    assert text.split()[0] in suspect["text"]
    assert suspect["voiced_s"] > suspect["high_s"] > suspect["expected_s"]
    assert [c["status"] for c in report["chapters"]] == ["done", "done"]  # its chapter is still written
    assert [c["suspect"] for c in report["chapters"]] == [0, 1]
    assert (tmp_path / "out" / report["chapters"][1]["file"]).is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert "1 part unverified" in err[-1] and "chapter 2" in err[-1]
    # The next run does not take the written chapter for finished: it asks afresh, and says so again.
    asked = len(human.requests)
    assert convert(book, tmp_path / "out", "--no-pack", "--verify-retries", "1") == 3
    assert read_report(tmp_path / "out")["status"] == "unverified"
    assert [r.input for r in human.requests[asked:]] == [text]


def test_the_measure_is_kept_with_the_part_and_a_rerun_decodes_nothing(
    human: FakeSpeechServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = verify.decode_part

    def counting(*args: object, **kw: object) -> object:
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "decode_part", counting)
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=4, sentences=3)
    cache = tmp_path / "cache"
    assert convert(book, tmp_path / "out", "--cache-dir", str(cache), "--no-pack") == 0
    parts = len(human.requests)
    assert len(calls) == parts
    sidecars = sorted(cache.glob("parts/*/*.mp3.measure.json"))
    assert len(sidecars) == parts
    # A rerun into a fresh folder assembles from the cache: every part judged again, none decoded to do so.
    calls.clear()
    assert convert(book, tmp_path / "again", "--cache-dir", str(cache), "--no-pack") == 0
    assert calls == [] and len(human.requests) == parts
    assert read_report(tmp_path / "again")["verification"]["verified"] == parts
    # A part met without its measure is never trusted: measured (once) and the measure kept.
    for path in sidecars:
        path.unlink()
    assert convert(book, tmp_path / "third", "--cache-dir", str(cache), "--no-pack") == 0
    assert len(calls) == parts and len(sorted(cache.glob("parts/*/*.measure.json"))) == parts
    assert json.loads(sidecars[0].read_text())["voiced_s"] > 0


def test_verification_off_measures_and_judges_nothing(human: FakeSpeechServer, tmp_path: Path) -> None:
    human.lie("cut_short", 1.0)
    book = write_book(tmp_path / "book.txt", chapters=1, paragraphs=2, sentences=3)
    assert convert(book, tmp_path / "out", "--no-pack", "--verify", "off") == 0
    report = read_report(tmp_path / "out")
    assert report["status"] == "done" and report["verification"] is None
    assert report["requests"] == len(human.requests)


# --- real speech --------------------------------------------------------------------------------------------


def test_real_speech_in_english_and_chinese_raises_no_false_alarm(tmp_path: Path) -> None:
    """The offline voice (eSpeak NG) on the demo book, English and Chinese chapters: nothing made again."""
    sample = tmp_path / "the-lantern-keeper.md"
    shutil.copy(REPO / "samples" / "the-lantern-keeper.md", sample)
    out = tmp_path / "out"
    code = main(["--quiet", "convert", str(sample), "-o", str(out), "--backend", "espeak", "--verify", "timing"])
    assert code == 0
    report = read_report(out)
    v = report["verification"]
    assert report["status"] == "done" and v["remade"] == 0 and v["suspect"] == 0
    assert v["verified"] == report["synthesized"] > 0


EMOJI_BOOK = """# Tram line approved

The county council voted on Tuesday night to build a tram line from the railway station to the new hospital on
the hill, ending years of argument over the route.

— tall glass of coquito 🎄 (@orabora) November 19, 2019

Shopkeepers on Mill Road said they feared the works would keep customers away for most of next year, and asked
the council for help with their rents.

— Dianna E. Anderson 🏳️‍🌈 (@diannaeanderson) November 18, 2019

The first trams are due to run in the autumn of next year, after a month of trials at night, and the old bus
route up the hill will be kept until then.

Best news all week 😂😂🔥 (@millroadshops)
"""


def test_emoji_are_counted_as_said_and_raise_no_false_alarm(tmp_path: Path) -> None:
    """Quoted posts end with "— name 🎄 (@handle) date": the offline voice says each emoji as a word or two
    ("Christmas tree"), so a part counted one character an emoji was "running on" and made again in vain."""
    assert verify.count_chars("🎄") == (verify.EMOJI_WEIGHT, "latin")
    assert verify.count_chars("🙏🏽") == (verify.EMOJI_WEIGHT, "latin")  # a skin tone is not said
    assert verify.count_chars("🏳️‍🌈") == (2 * verify.EMOJI_WEIGHT, "latin")  # joiner and selector are not
    book = tmp_path / "tram.md"
    book.write_text(EMOJI_BOOK, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["--quiet", "convert", str(book), "-o", str(out), "--backend", "espeak", "--verify", "timing"])
    v = read_report(out)["verification"]
    assert code == 0 and v["remade"] == 0 and v["suspect"] == 0, v["suspects"]


# --- the measure kept beside the part, in a folder or a bucket ----------------------------------------------


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_the_measure_lives_beside_the_part_in_either_store(
    where: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.engines import Made, cached_part, keep_part
    from pipeline.models import BackendOptions, PartRequest, PartResult, PartStatus, VoiceSpec
    from pipeline.store import Stores, part_key
    from tests.fakeserver import audio_for

    location = str(tmp_path / "cache") if where == "folder" else request.getfixturevalue("bucket").url("cache")
    store = Stores().at(location)
    text = "The keeper climbed the narrow stair each evening and wound the brass clock."
    spec = VoiceSpec("tts-1", "alloy")
    key = part_key("test", spec, text)
    part = PartRequest(key, text, spec, BackendOptions(), location, verify=True)
    audio = audio_for(text, HUMAN_MS_PER_CHAR)
    calls: list[int] = []
    real = verify.decode_part
    monkeypatch.setattr(verify, "decode_part", lambda *a, **k: calls.append(1) or real(*a, **k))

    kept = keep_part(store, part, Made(audio, PartResult(key, PartStatus.STORED, 1, len(text))))
    assert kept.ok and kept.measure is not None and calls == [1]
    assert kept.measure.voiced_s == pytest.approx(len(text) * HUMAN_MS_PER_CHAR / 1000, abs=0.1)
    assert store.get(key, "mp3") == audio
    again = cached_part(store, part)  # read, not measured
    assert again.status == PartStatus.CACHED and again.measure == kept.measure and calls == [1]
    store.evict(key, "mp3.measure.json")  # an older cache: the part alone
    assert cached_part(store, part).measure == kept.measure and calls == [1, 1]
    assert verify.load(store, key, "mp3") == kept.measure  # and kept this time


def test_a_kept_measure_is_judged_by_todays_count_of_its_text(tmp_path: Path) -> None:
    """A measure kept beside a part under an older way of counting (one character an emoji) keeps its audio
    figures, and its text is counted again: a rerun does not judge a part by a stale count."""
    from pipeline.models import PartMeasure
    from pipeline.store import Stores

    store = Stores().at(str(tmp_path / "cache"))
    text = "— tall glass of coquito 🎄 (@orabora) November 19, 2019"
    store.put("k", b"audio", "mp3")
    old = PartMeasure(len(text.replace(" ", "")), "latin", 4.6, 4.56, 0.2, 0.02, 0.02, size=5)
    verify.save(store, "k", "mp3", old)
    found = verify.measured(store, "k", "mp3", text)
    assert found is not None and found.chars == verify.count_chars(text)[0] == old.chars + verify.EMOJI_WEIGHT - 1
    assert (found.voiced_s, found.inner_silence_s, found.size) == (old.voiced_s, old.inner_silence_s, old.size)


# --- settings and the transcript hook -----------------------------------------------------------------------


def test_verify_settings_are_checked_with_a_clear_error() -> None:
    from pipeline.config import load_settings
    from pipeline.errors import UsageError

    assert load_settings(env={}).book.verify == "timing" and load_settings(env={}).book.verify_retries == 2
    with pytest.raises(UsageError, match="verify must be one of timing, off, transcribe"):
        load_settings(env={}, overrides={"verify": "maybe"})
    with pytest.raises(UsageError, match="verify_retries must be between 0 and 10"):
        load_settings(env={"AUDIOBOOK_VERIFY_RETRIES": "50"})


def test_a_transcripts_coverage_folds_into_the_timing_verdict() -> None:
    timing = verify.Judge().judge(PartMeasure(160, "latin", 10.3, 10.0, 0.4, 0.1, 0.2), "v", None)
    assert timing.ok and timing.coverage is None
    assert verify.with_transcript(timing, None) == timing  # no transcript: the timing verdict stands
    text = "Alice was beginning to get very tired of sitting by her sister on the bank. She had nothing to do."
    heard = verify.with_transcript(timing, compare(text, text.lower(), language="en"))
    assert heard.ok and heard.coverage == 1.0
    short = verify.with_transcript(timing, compare(text, "She had nothing to do.", language="en"))
    assert not short.ok and short.reasons[0].startswith("left out words (coverage 25% of 20 tokens")
    assert 'missing: "alice was beginning' in short.reasons[0]
    more = verify.with_transcript(timing, compare(text, f"{text} {text} and so on", language="en"))
    assert not more.ok and more.reasons[0].startswith("says more than its text")
