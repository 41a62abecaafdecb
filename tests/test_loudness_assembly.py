"""Loudness levelling in chapter assembly, checked on the files written: ffmpeg's ``ebur128`` on the chapter MP3,
cues against where the sound is, the report a run leaves; and nothing changed when no target is asked for."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from array import array
from pathlib import Path

import pytest
from mutagen.mp4 import MP4

from pipeline import assembly, wire
from pipeline.assembly import assemble_chapter, build_m4b
from pipeline.assembly.decode import decode_part_pcm
from pipeline.assembly.loudness import ACX, EBU, TARGETS, Ebur128Summary, parse_ebur128_summary
from pipeline.cli import main
from pipeline.config import BookOptions, load_settings
from pipeline.jobs import ChapterDone
from pipeline.media import encode_pcm, ffmpeg_exe
from pipeline.models import Book, Chapter, ChapterAudio, Pause, Segment
from pipeline.planning import plan_book
from pipeline.readers import read_book
from pipeline.report import (
    BookReport,
    BookStatus,
    ChapterOutcome,
    ChapterStatus,
    LoudnessFigures,
    format_loudness,
    read_previous,
    write_report,
)
from pipeline.store import FileStore
from tests.fakeserver import FakeSpeechServer
from tests.helpers import read_report, write_book
from tests.test_assembly import parse_cues
from tests.test_loudness import SPOKEN, mp3, peak_db, rms_db, silence, speech_like, spoken

RATE = 24_000
BOOK = Book("Levels", (Chapter(1, "One", ("a",)), Chapter(2, "Two", ("b",))))
PAUSES = BookOptions(sentence_pause_ms=250, paragraph_pause_ms=700, title_pause_ms=1000, chapter_pad_ms=500)


def file_loudness(path: Path, start_s: float | None = None, end_s: float | None = None) -> Ebur128Summary:
    """ffmpeg's EBU R128 measurement of an encoded file, or of a stretch of it."""
    trim = f"atrim=start={start_s}:end={end_s}," if start_s is not None else ""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", str(path), "-af",
           f"{trim}ebur128=peak=sample+true:framelog=quiet", "-f", "null", "-"]  # fmt: skip
    return parse_ebur128_summary(subprocess.run(cmd, capture_output=True, text=True, check=True).stderr)


def file_pcm(path: Path) -> bytes:
    cmd = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


def segments(chapter: int, pauses: list[Pause]) -> list[Segment]:
    return [Segment(chapter, i, f"Part {i} of chapter {chapter}.", p) for i, p in enumerate(pauses)]


def assemble(parts: list[bytes], settings: BookOptions, out: Path, chapter: int = 1) -> ChapterAudio:
    pauses = [Pause.PARAGRAPH] * (len(parts) - 1) + [Pause.END]
    sources: list[assembly.PartSource] = [lambda p=p: p for p in parts]  # type: ignore[misc]
    return assemble_chapter(BOOK, BOOK.chapters[chapter - 1], segments(chapter, pauses), sources, out, settings)


# --------------------------------------------------------------------------------------------- levels


def test_two_parts_10_db_apart_end_on_the_ebu_target_and_with_each_other(tmp_path: Path) -> None:
    loud, quiet = mp3(speech_like(4.0, -16.0, seed=1)), mp3(speech_like(4.0, -26.0, seed=2))
    settings = dataclasses.replace(PAUSES, loudness="ebu", subtitles="srt")
    result = assemble([loud, quiet], settings, tmp_path)

    whole = file_loudness(result.path)
    assert whole.integrated_lufs is not None and abs(whole.integrated_lufs - EBU.level_db) <= 1.0
    assert whole.true_peak_db is not None and whole.true_peak_db <= EBU.ceiling_db
    cues = parse_cues(result.path.with_suffix(".srt").read_text(encoding="utf-8"), "srt")
    halves = [file_loudness(result.path, start / 1000, end / 1000).integrated_lufs for start, end, _ in cues]
    assert halves[0] is not None and halves[1] is not None
    assert abs(halves[0] - halves[1]) <= 1.0  # they were 10 LU apart as the voice answered
    assert all(abs(lufs - EBU.level_db) <= 1.0 for lufs in halves)

    summary = result.loudness
    assert summary is not None and EBU.accepts(summary)
    assert summary.integrated_lufs == pytest.approx(whole.integrated_lufs, abs=0.5)
    assert summary.source_lufs is not None and summary.source_lufs < EBU.level_db - 3
    assert summary.gain_max_db - summary.gain_min_db == pytest.approx(10.0, abs=0.7)
    assert summary.parts == 2 and summary.duration_ms == result.duration_ms


def test_acx_holds_its_rms_range_and_peak_ceiling_on_the_file(tmp_path: Path) -> None:
    parts = [mp3(speech_like(3.0, level, seed=i)) for i, level in enumerate((-14.0, -24.0, -32.0))]
    result = assemble(parts, dataclasses.replace(PAUSES, loudness="acx"), tmp_path)
    pcm = file_pcm(result.path)
    assert ACX.low_db <= rms_db(pcm) <= ACX.high_db  # ACX's rule: unweighted RMS of the whole file, pauses in
    assert peak_db(pcm) <= ACX.ceiling_db
    summary = result.loudness
    assert summary is not None and ACX.accepts(summary)
    assert summary.rms_db == pytest.approx(rms_db(pcm), abs=0.5)


def test_real_speech_10_db_apart_needs_and_gets_the_limiter(tmp_path: Path) -> None:
    """The offline voice's speech peaks ~19 dB over its loudness: only the limiter lets it reach -18 LUFS."""
    parts = [spoken(SPOKEN[0], 0.0), spoken(SPOKEN[1], -10.0)]
    result = assemble(parts, dataclasses.replace(PAUSES, loudness="ebu", subtitles="vtt"), tmp_path)
    cues = parse_cues(result.path.with_suffix(".vtt").read_text(encoding="utf-8"), "vtt")
    halves = [file_loudness(result.path, start / 1000, end / 1000).integrated_lufs for start, end, _ in cues]
    assert halves[0] is not None and halves[1] is not None
    assert abs(halves[0] - halves[1]) <= 1.0 and all(abs(x - EBU.level_db) <= 1.0 for x in halves)
    whole = file_loudness(result.path)
    assert whole.true_peak_db is not None and whole.true_peak_db <= EBU.ceiling_db + 0.1
    assert result.loudness is not None and result.loudness.limited == 2 and EBU.accepts(result.loudness)


def test_wav_parts_are_levelled_too(tmp_path: Path) -> None:
    parts = [encode_pcm(speech_like(3.0, level, seed=5), in_rate=RATE, fmt="wav") for level in (-14.0, -30.0)]
    result = assemble(parts, dataclasses.replace(PAUSES, response_format="wav", loudness="ebu"), tmp_path)
    whole = file_loudness(result.path)
    assert whole.integrated_lufs is not None and abs(whole.integrated_lufs - EBU.level_db) <= 1.0
    assert result.loudness is not None and result.loudness.gain_max_db - result.loudness.gain_min_db > 14


@pytest.mark.parametrize("damage", ["garbage", "gone"])
def test_a_damaged_part_is_named_when_levelling(tmp_path: Path, damage: str) -> None:
    good = mp3(speech_like(2.0, -20.0, seed=6))
    bad = {"garbage": b"\xff\xfb" + b"\x00" * 50, "gone": None}[damage]
    sources: list[assembly.PartSource] = [lambda: good, lambda: bad, lambda: good]
    settings = dataclasses.replace(PAUSES, loudness="ebu")
    pauses = [Pause.SENTENCE, Pause.SENTENCE, Pause.END]
    with pytest.raises(assembly.PartDecodeError) as caught:
        assemble_chapter(BOOK, BOOK.chapters[0], segments(1, pauses), sources, tmp_path, settings)
    assert (caught.value.chapter, caught.value.segment) == (1, 1)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


# --------------------------------------------------------------------------------------------- timing


def sound_edges(pcm: bytes, start_ms: int, end_ms: int, threshold: int = 100) -> tuple[float, float]:
    """Where sound starts and ends (ms) between two times of a chapter: the first and last 5 ms windows whose
    peak passes ``threshold`` (-50 dBFS; the pauses are digital silence, a few units after MP3)."""
    window = RATE // 200
    samples = array("h", pcm)
    loud = [
        w
        for w in range(RATE * start_ms // 1000 // window, RATE * end_ms // 1000 // window)
        if max(map(abs, samples[w * window : (w + 1) * window]), default=0) > threshold
    ]
    return loud[0] * 5.0, (loud[-1] + 1) * 5.0


def test_cues_and_length_follow_the_trimmed_parts(tmp_path: Path) -> None:
    """Each part arrives with 400 ms of silence before and 600 ms after its sound; trimmed to 40 ms margins, so
    every cue starts where its part does in the file, not where it would have untrimmed."""
    body = [speech_like(2.0, -20.0, seed=10 + i) for i in range(3)]
    parts = [mp3(silence(400) + b + silence(600)) for b in body]
    settings = dataclasses.replace(PAUSES, loudness="ebu", subtitles="srt")
    result = assemble(parts, settings, tmp_path)
    pcm = file_pcm(result.path)
    assert abs(len(pcm) // 2 * 1000 / RATE - result.duration_ms) <= 1

    cues = parse_cues(result.path.with_suffix(".srt").read_text(encoding="utf-8"), "srt")
    after = [0] + [end for _, end, _ in cues]  # each part's sound is between the cue before and the cue after
    before = [start for start, _, _ in cues[1:]] + [result.duration_ms]
    for i, (start, end, _) in enumerate(cues):
        onset, offset = sound_edges(pcm, after[i], before[i])
        # The part starts at its cue; its sound 40 ms (the margin trimming keeps) to 50 ms (a 10 ms window) later.
        assert 0 <= onset - start <= 50, (i, onset, start)
        assert 0 <= end - offset <= 60, (i, offset, end)
    assert result.loudness is not None and result.loudness.trimmed_ms == pytest.approx(3 * 920, abs=3 * 30)
    # The chapter is the pads, the pauses and the trimmed parts, nothing else.
    speech = sum(end - start for start, end, _ in cues)
    assert result.duration_ms == pytest.approx(2 * 500 + 2 * 700 + speech, abs=3)


def test_m4b_marks_follow_levelled_chapters(tmp_path: Path) -> None:
    settings = dataclasses.replace(PAUSES, loudness="ebu")
    parts = [mp3(silence(500) + speech_like(2.0, level, seed=20) + silence(500)) for level in (-30.0, -22.0)]
    chapters = [assemble([part], settings, tmp_path, c) for c, part in enumerate(parts, 1)]
    m4b = MP4(build_m4b(tmp_path, BOOK, chapters, settings))
    real = [len(file_pcm(ch.path)) / 2 / RATE for ch in chapters]
    assert [c.start for c in m4b.chapters or []] == pytest.approx([0.0, real[0]], abs=0.03)
    assert [ch.duration_ms / 1000 for ch in chapters] == pytest.approx(real, abs=0.002)


# --------------------------------------------------------------------------------------------- no target


def id3_stripped(data: bytes) -> bytes:
    """An MP3 file's bytes after its ID3v2 tag (what assemble_chapter adds once ffmpeg is done)."""
    if data[:3] != b"ID3":
        return data
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return data[10 + size :]


def test_without_a_target_the_decoded_chapter_is_what_it_was(tmp_path: Path) -> None:
    """Byte for byte the file the decode path wrote before levelling existed: the parts decoded, the pauses,
    one encode with LAME's default quality and no filter."""
    parts = [mp3(silence(300) + speech_like(1.5, level, seed=30)) for level in (-16.0, -26.0)]
    settings = dataclasses.replace(PAUSES, bitrate="96k")  # another bitrate than the parts': decoded, not joined
    result = assemble(parts, settings, tmp_path / "out")
    assert result.loudness is None

    pad, pause = bytes(2 * RATE * 500 // 1000), bytes(2 * RATE * 700 // 1000)
    pcm = pad + decode_part_pcm(parts[0], RATE) + pause + decode_part_pcm(parts[1], RATE) + pad
    reference = tmp_path / "reference.mp3"
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1",
           "-i", "pipe:0", "-ar", str(RATE), "-ac", "1", "-c:a", "libmp3lame", "-b:a", "96k", "-id3v2_version", "0",
           "-write_xing", "1", "-map_metadata", "-1", "-f", "mp3", "-y", str(reference)]  # fmt: skip
    subprocess.run(cmd, input=pcm, check=True)
    assert id3_stripped(result.path.read_bytes()) == reference.read_bytes()
    assert result.duration_ms == round(len(pcm) / 2 * 1000 / RATE)


def test_without_a_target_matching_parts_are_still_joined_losslessly(tmp_path: Path) -> None:
    parts = [mp3(speech_like(1.5, level, seed=31)) for level in (-16.0, -26.0)]
    plain = assemble(parts, PAUSES, tmp_path / "plain")
    levelled = assemble(parts, dataclasses.replace(PAUSES, loudness="ebu"), tmp_path / "levelled")
    assert plain.loudness is None and levelled.loudness is not None
    body = id3_stripped(plain.path.read_bytes())
    assert parts[0][parts[0].index(b"\xff") :] in body  # the first part's own frames, not re-encoded
    assert parts[0][parts[0].index(b"\xff") :] not in id3_stripped(levelled.path.read_bytes())


# --------------------------------------------------------------------------------------------- travelling and reporting


def test_the_summary_travels_as_json_between_worker_and_driver(tmp_path: Path) -> None:
    result = assemble([mp3(speech_like(2.0, -25.0, seed=40))], dataclasses.replace(PAUSES, loudness="ebu"), tmp_path)
    done = ChapterDone(result)
    sent = json.loads(json.dumps(wire.encode(done)))
    assert wire.decode(ChapterDone, sent) == done
    old = json.loads(json.dumps(wire.encode(ChapterDone(dataclasses.replace(result, loudness=None)))))
    del old["audio"]["loudness"]  # from a worker that predates levelling
    assert wire.decode(ChapterDone, old).audio == dataclasses.replace(result, loudness=None)


def outcome(index: int, figures: LoudnessFigures | None, status: ChapterStatus = ChapterStatus.DONE) -> ChapterOutcome:
    return ChapterOutcome(index, f"C{index}", f"0{index} C{index}.mp3", status, 3, 90, 60.0, "fp", loudness=figures)


def figures(lufs: float, peak: float = -1.6, **kw: object) -> LoudnessFigures:
    fields: dict[str, object] = {"target": "ebu", "integrated_lufs": lufs, "rms_db": lufs - 2, "peak_db": peak,
                                 "true_peak_db": None, "parts": 4, "limited": 1, "short": 0}  # fmt: skip
    fields.update(kw)
    fields.setdefault("complies", EBU.low_db <= lufs <= EBU.high_db and peak <= EBU.ceiling_db)
    return LoudnessFigures(**fields)  # type: ignore[arg-type]


def test_the_human_report_says_it_in_one_line() -> None:
    good = [outcome(1, figures(-18.1)), outcome(2, figures(-17.9, peak=-1.3)), outcome(3, None, ChapterStatus.FAILED)]
    assert format_loudness(good) == [
        "loudness: 2 chapters at -18.1..-17.9 LUFS, peak -1.3 dBFS; all within ebu's range (-19..-17 LUFS, peaks to "
        "-1 dB); 2 parts limited"
    ]
    bad = [*good, outcome(4, figures(-20.4, short=2, limited=0))]
    (line,) = format_loudness(bad)
    assert "outside ebu's range" in line and "chapter 4 (-20.4 LUFS, peak -1.6)" in line
    assert line.endswith("2 parts limited, 2 short of the target")
    assert "chapter 1" not in line and "chapter 2" not in line
    assert format_loudness([outcome(1, None)]) == []  # no target: no line


def test_old_reports_without_loudness_are_still_read(tmp_path: Path) -> None:
    fields = {"status": BookStatus.DONE, "plan": {}, "requests": 0, "retries": 0, "cache_hits": 0, "synthesized": 0,
              "characters_sent": 0, "failures": (), "duration_s": 1.0, "elapsed_s": 1.0, "estimated_cost_usd": 0.0,
              "started": "", "finished": ""}  # fmt: skip
    write_report(tmp_path, BookReport(chapters=(outcome(1, figures(-18.0)), outcome(2, None)), **fields))  # type: ignore[arg-type]
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["chapters"][0]["loudness"]["integrated_lufs"] == -18.0 and data["chapters"][1]["loudness"] is None
    assert read_previous(tmp_path).loudness == {"01 C1.mp3": figures(-18.0)}

    for entry in data["chapters"]:
        entry.pop("loudness")  # as a report from before levelling
    data["chapters"].append({**data["chapters"][0], "file": "03 C3.mp3", "loudness": {"target": "ebu", "parts": "x"}})
    (tmp_path / "report.json").write_text(json.dumps(data), encoding="utf-8")
    previous = read_previous(tmp_path)
    assert previous.loudness == {}  # missing or unreadable: simply unknown
    assert set(previous.current) == {"01 C1.mp3", "02 C2.mp3", "03 C3.mp3"}


def test_a_run_with_a_target_levels_and_reports_every_chapter(
    server: FakeSpeechServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the real program: the parts are in the store already (each chapter's alternately 10 dB apart,
    as two voices' answers might be), so nothing is requested."""
    book = write_book(tmp_path / "book.txt", chapters=2, paragraphs=2, sentences=3)
    store = FileStore(Path(os.environ["XDG_CACHE_HOME"]) / "audiobook-pipeline")
    plan = plan_book(read_book(book), load_settings(), tmp_path / "out", store)
    answers = [spoken(SPOKEN[0], 0.0), spoken(SPOKEN[1], -10.0)]
    for chapter in plan.chapters:
        for i, key in enumerate(chapter.keys):
            store.put(key, answers[i % 2], "mp3")
    out = tmp_path / "out"

    assert main(["convert", str(book), "-o", str(out), "--loudness", "ebu", "--timeout", "2"]) == 0
    assert server.requests == []
    report = read_report(out)
    assert [c["status"] for c in report["chapters"]] == ["done", "done"]
    for entry in report["chapters"]:
        levels = entry["loudness"]
        assert levels["target"] == "ebu" and levels["complies"] is True and levels["parts"] == entry["segments"]
        measured = file_loudness(out / entry["file"])
        assert measured.integrated_lufs is not None and abs(measured.integrated_lufs - EBU.level_db) <= 1.0
        assert levels["integrated_lufs"] == pytest.approx(measured.integrated_lufs, abs=0.5)
    printed = capsys.readouterr().out
    assert "loudness: 2 chapters at " in printed and "all within ebu's range" in printed

    # Again: nothing to do, and the report still has every chapter's loudness, from the earlier run.
    assert main(["convert", str(book), "-o", str(out), "--loudness", "ebu", "--timeout", "2"]) == 0
    again = read_report(out)
    assert [c["status"] for c in again["chapters"]] == ["unchanged", "unchanged"]
    assert [c["loudness"] for c in again["chapters"]] == [c["loudness"] for c in report["chapters"]]
    assert "loudness: 2 chapters" in capsys.readouterr().out

    # The target is part of what a chapter file depends on: without it the chapters are made again, plainly.
    assert main(["convert", str(book), "-o", str(out), "--timeout", "2"]) == 0
    plain = read_report(out)
    assert [c["status"] for c in plain["chapters"]] == ["done", "done"]
    assert all(c["loudness"] is None for c in plain["chapters"])
    assert "loudness:" not in capsys.readouterr().out
    assert server.requests == []


def test_targets_match_the_config_choices() -> None:
    from pipeline.config import LOUDNESS_TARGETS

    assert tuple(TARGETS) == LOUDNESS_TARGETS
