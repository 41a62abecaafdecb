"""Assembly: chapter files, tags, subtitles, playlist, M4B. Parts are real MP3/WAV made offline."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.id3 import ID3
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4

from pipeline import mp3
from pipeline.assembly import (
    PartDecodeError,
    PartSource,
    assemble_chapter,
    book_stem,
    build_m4b,
    chapter_filename,
    segment_cues,
    write_playlist,
)
from pipeline.assembly.decode import decode_part_pcm
from pipeline.config import BookOptions
from pipeline.errors import AudioError
from pipeline.media import encode_pcm, ffmpeg_exe
from pipeline.models import Book, Chapter, ChapterAudio, Pause, Segment
from tests.audiocheck import decode
from tests.helpers import tiny_png

RATE = 24_000
# Small distinct pauses so each one is identifiable in the timings.
SETTINGS = BookOptions(sentence_pause_ms=150, paragraph_pause_ms=400, title_pause_ms=600, chapter_pad_ms=300)


def sine_pcm(ms: int, rate: int = RATE, freq: float = 440.0) -> bytes:
    n = rate * ms // 1000
    return array("h", (int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))).tobytes()


def frames(audio_bytes: bytes, fmt: str = "mp3") -> int:
    seg = decode(audio_bytes, fmt).set_channels(1).set_frame_rate(RATE).set_sample_width(2)
    return len(seg.raw_data) // 2


def make_parts(tmp: Path, lengths_ms: list[int], fmt: str = "mp3", rate: int = RATE) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, ms in enumerate(lengths_ms):
        path = tmp / f"part{i}.{fmt}"
        path.write_bytes(encode_pcm(sine_pcm(ms, rate), in_rate=rate, out_rate=rate, fmt=fmt))
        parts.append(path)
    return parts


def sources(paths: list[Path]) -> list[PartSource]:
    """The parts as the assembler reads them from a store: bytes, or None when the file is gone."""

    def reader(path: Path) -> PartSource:
        return lambda: path.read_bytes() if path.exists() else None

    return [reader(p) for p in paths]


def make_book(n: int = 3, title: str = "Alice's Adventures", **kw: Any) -> Book:
    chapters = tuple(Chapter(i, f"Chapter {i}: Part {i}", (f"Text {i}.",)) for i in range(1, n + 1))
    return Book(title, chapters, **kw)


PAUSES = [Pause.SENTENCE, Pause.PARAGRAPH, Pause.TITLE, Pause.END]
PAUSE_MS = {Pause.SENTENCE: 150, Pause.PARAGRAPH: 400, Pause.TITLE: 600, Pause.END: 0}


def segments_for(chapter: int, pauses: list[Pause]) -> list[Segment]:
    return [Segment(chapter, i, f"Segment {i} says <this> & that.", p) for i, p in enumerate(pauses)]


def expected_starts_ms(part_frames: list[int], pauses: list[Pause], join: str = "decoded") -> list[float]:
    """Where each segment's audio starts: the lead-in pad, then every earlier part and the pause after it."""
    starts, t = [], float(pause_samples(SETTINGS.chapter_pad_ms, join))
    for f, p in zip(part_frames, pauses, strict=True):
        starts.append(t * 1000 / RATE)
        t += f + pause_samples(PAUSE_MS[p], join)
    return starts


# --------------------------------------------------------------------------------------------- file names

FORBIDDEN = set('<>:"/\\|?*')
RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)}


def assert_safe_name(name: str, ext: str) -> None:
    assert name.endswith("." + ext)
    assert not FORBIDDEN & set(name), name
    assert ".." not in name
    assert all(ord(c) >= 32 and c != "\x7f" for c in name)
    stem = name[: -len(ext) - 1]
    assert stem == stem.rstrip(" .") and not stem.startswith((".", " "))
    assert stem.split(".")[0].strip().upper() not in RESERVED
    assert len((name + ".part").encode("utf-8")) <= 255


@pytest.mark.parametrize(
    ("index", "total", "title", "expected"),
    [
        (1, 12, "Down the Rabbit-Hole", "01 Down the Rabbit-Hole.mp3"),
        (7, 120, "Seven", "007 Seven.mp3"),
        (3, 5, "Chapter 3: The Pool", "03 Chapter 3 - The Pool.mp3"),
        (1, 3, "../../etc/passwd", "01 …-…-etc-passwd.mp3"),
        (1, 3, "CON", "01 CON.mp3"),  # the number prefix already makes device names harmless
        (1, 3, "aux.txt", "01 aux.txt.mp3"),
        (1, 3, "a/b\\c", "01 a-b-c.mp3"),
        (4, 9, "   ", "04 Chapter 4.mp3"),
        (2, 3, "", "02 Chapter 2.mp3"),
        (1, 3, "第一章 兔子洞", "01 第一章 兔子洞.mp3"),
        (1, 3, "The End.", "01 The End.mp3"),
        (1, 3, "Wait... what?", "01 Wait… what.mp3"),
        (1, 3, 'He said "no" <loudly> | *twice*', "01 He said 'no' loudly - twice.mp3"),
        (1, 3, "line\none\ttab\x00nul\x1b", "01 line one tabnul.mp3"),
        (1, 3, "evil\u202egpm.exe", "01 evilgpm.exe.mp3"),
        (1, 3, "...", "01 Chapter 1.mp3"),
        (5, 9, "* * *", "05 Chapter 5.mp3"),
        (6, 9, "— § —", "06 Chapter 6.mp3"),
        (1, 3, "😀", "01 😀.mp3"),
    ],
)
def test_chapter_filename_table(index: int, total: int, title: str, expected: str) -> None:
    name = chapter_filename(index, total, title)
    assert name == expected
    assert_safe_name(name, "mp3")


def test_chapter_filename_caps_long_titles() -> None:
    name = chapter_filename(1, 3, "x" * 300)
    assert name == "01 " + "x" * 80 + ".mp3"
    # Four-byte characters: 80 of them would be 320 bytes, so the byte cap binds before the character cap.
    emoji = chapter_filename(1, 3, "😀" * 300)
    assert_safe_name(emoji, "mp3")
    assert emoji.startswith("01 😀") and len(emoji.encode()) <= 250
    rare = chapter_filename(1, 3, "𠀀" * 300)  # CJK extension B: four bytes each, too
    assert rare.startswith("01 𠀀") and len(rare.encode()) <= 250 and (rare.count("𠀀") + 1) * 4 > 250 - 7
    cjk = chapter_filename(1, 3, "兔" * 300)
    assert cjk == "01 " + "兔" * 80 + ".mp3"


def test_chapter_filename_other_extension() -> None:
    assert chapter_filename(2, 2, "Two", "srt") == "02 Two.srt"
    with pytest.raises(ValueError):
        chapter_filename(2, 2, "Two", "mp3/../x")


@pytest.mark.parametrize(
    ("title", "expected"),
    [("CON", "CON_"), ("aux.txt", "aux_.txt"), ("Lpt1", "Lpt1_"), ("  ", "Audiobook"), (".hidden", "hidden"),
     ("../../x", "…-…-x"), ("三体", "三体"), ("A: B.", "A - B")],
)  # fmt: skip
def test_book_stem_is_safe_without_a_number_prefix(title: str, expected: str) -> None:
    stem = book_stem(make_book(1, title=title))
    assert stem == expected
    assert_safe_name(stem + ".m3u", "m3u")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(1, 2000))
def test_chapter_filename_is_always_safe(title: str, index: int) -> None:
    name = chapter_filename(index, index, title)
    assert_safe_name(name, "mp3")
    assert name.startswith(f"{index:02d} ")


# --------------------------------------------------------------------------------------------- assembly


# The two ways a chapter is joined: the parts' own frames (their rate and bitrate are the settings'), and
# decoding with one encode (here because the settings ask for another bitrate than the parts have).
JOINS = {"lossless": SETTINGS, "decoded": dataclasses.replace(SETTINGS, bitrate="96k")}


def assembled_samples(part: bytes, join: str) -> int:
    """A part's length in the chapter: every frame when joined losslessly; decoded, what ffmpeg gives."""
    return mp3.check_part(part).samples if join == "lossless" else len(decode_part_pcm(part, RATE)) // 2


def pause_samples(ms: int, join: str) -> int:
    """A pause's length: whole silent frames (576 samples at 24 kHz) when lossless; exact when encoded."""
    if join == "lossless":
        return mp3.frames_for_ms(mp3.StreamFormat("2", 3, RATE, 1), ms) * 576
    return RATE * ms // 1000


@pytest.mark.parametrize("join", JOINS)
def test_assembled_duration_and_timing(tmp_path: Path, join: str) -> None:
    lengths = [700, 450, 900, 300, 500]
    pauses = [Pause.SENTENCE, Pause.PARAGRAPH, Pause.TITLE, Pause.SENTENCE, Pause.PARAGRAPH]
    parts = make_parts(tmp_path / "parts", lengths)
    # Parts piped out of ffmpeg carry no LAME gapless header, so each decodes ~50 ms longer than the PCM
    # that went in (encoder delay + padding to a whole 576-sample frame). That longer length IS the part's
    # audio as assembly sees it, so expectations use the assembled lengths, not the nominal ones.
    part_frames = [assembled_samples(p.read_bytes(), join) for p in parts]
    assert all(0 < f - RATE * ms // 1000 < RATE * 0.1 for f, ms in zip(part_frames, lengths, strict=True))
    book = make_book()
    out = tmp_path / "out"
    result = assemble_chapter(book, book.chapters[1], segments_for(2, pauses), sources(parts), out, JOINS[join])

    assert result.path == out / "02 Chapter 2 - Part 2.mp3"
    assert sorted(p.name for p in out.iterdir()) == [result.path.name]  # no .part left behind
    # The last segment's pause is replaced by the trailing pad; every other pause is its own kind's.
    pad = pause_samples(300, join)
    silence = sum(pause_samples(PAUSE_MS[p], join) for p in pauses[:-1])
    expected = pad + sum(part_frames) + silence + pad
    # Decoded, the chapter is written to a seekable file, so ffmpeg stores a LAME header with the encoder delay
    # and padding and its decoder trims them: the file decodes to exactly the samples we fed in. Lossless, it
    # is every frame. Allow one MP3 frame (576 samples, 24 ms) in case another ffmpeg build trims differently.
    got = frames(result.path.read_bytes())
    assert abs(got - expected) <= 576
    assert abs(result.duration_ms - expected * 1000 / RATE) <= 1
    assert MP3(result.path).info.bitrate // 1000 == (128 if join == "lossless" else 96)


def test_pauses_are_where_the_segments_say(tmp_path: Path) -> None:
    lengths = [400, 400, 400, 400]
    pauses = [Pause.TITLE, Pause.SENTENCE, Pause.PARAGRAPH, Pause.END]
    parts = make_parts(tmp_path / "parts", lengths)
    part_frames = [frames(p.read_bytes()) for p in parts]
    book = make_book()
    result = assemble_chapter(book, book.chapters[0], segments_for(1, pauses), sources(parts), tmp_path, SETTINGS)
    pcm = array("h", decode(result.path.read_bytes()).raw_data)

    def loudness(start_ms: float, end_ms: float) -> float:
        window = pcm[int(start_ms * RATE / 1000) : int(end_ms * RATE / 1000)]
        return sum(abs(x) for x in window) / max(len(window), 1)

    starts = expected_starts_ms(part_frames, pauses)
    ends = [s + f * 1000 / RATE for s, f in zip(starts, part_frames, strict=True)]
    edge = 40  # ms kept clear of each boundary: MP3 smears transients a little
    assert loudness(0, starts[0] - edge) < 50  # lead-in pad
    for i in range(len(starts)):
        assert loudness(starts[i] + edge, ends[i] - 80) > 3000  # the tone (the last ~50 ms is encoder padding)
        gap_end = starts[i + 1] if i + 1 < len(starts) else len(pcm) * 1000 / RATE
        assert loudness(ends[i] + edge, gap_end - edge) < 50  # the pause after it


def test_tags_read_back(tmp_path: Path) -> None:
    cover = tiny_png()
    book = make_book(3, title="Alice 爱丽丝", author="Lewis Carroll", language="en-GB", cover=cover)
    parts = make_parts(tmp_path / "parts", [300])
    result = assemble_chapter(
        book,
        book.chapters[1],
        segments_for(2, [Pause.END]),
        sources(parts),
        tmp_path / "o",
        BookOptions(genre="Spoken"),
    )
    tags = ID3(result.path)
    assert tags.version[:2] == (2, 3)
    assert tags["TIT2"].text == ["Chapter 2: Part 2"]
    assert tags["TALB"].text == ["Alice 爱丽丝"]
    assert tags["TPE1"].text == ["Lewis Carroll"]
    assert tags["TPE2"].text == ["Lewis Carroll"]
    assert tags["TRCK"].text == ["2/3"]
    assert tags["TCON"].text == ["Spoken"]
    assert tags["TLAN"].text == ["eng"]
    (apic,) = tags.getall("APIC")
    assert apic.data == cover and apic.mime == "image/png" and apic.type == 3


def test_tags_left_out_when_unknown(tmp_path: Path) -> None:
    book = make_book(2)
    parts = make_parts(tmp_path / "parts", [300])
    result = assemble_chapter(
        book, book.chapters[0], segments_for(1, [Pause.END]), sources(parts), tmp_path, SETTINGS, total_chapters=12
    )
    tags = ID3(result.path)
    assert tags["TRCK"].text == ["1/12"] and result.path.name == "01 Chapter 1 - Part 1.mp3"
    assert not any(tags.getall(k) for k in ("TPE1", "TPE2", "TLAN", "APIC"))
    assert tags["TCON"].text == ["Audiobook"]


def test_wav_parts_at_another_rate_are_resampled(tmp_path: Path) -> None:
    parts = make_parts(tmp_path / "parts", [500, 500], fmt="wav", rate=22_050)
    book = make_book(1)
    s = BookOptions(response_format="wav", chapter_pad_ms=0, sentence_pause_ms=250)
    result = assemble_chapter(
        book, book.chapters[0], segments_for(1, [Pause.SENTENCE] * 2), sources(parts), tmp_path, s
    )
    # WAV has no encoder padding: 500 + 250 + 500 ms exactly, give or take resampling rounding.
    assert abs(frames(result.path.read_bytes()) - RATE * 1250 // 1000) <= 2


@pytest.mark.parametrize("damage", ["garbage", "empty", "missing"])
def test_undecodable_part_names_it_and_writes_nothing(tmp_path: Path, damage: str) -> None:
    parts = make_parts(tmp_path / "parts", [300, 300, 300])
    if damage == "garbage":
        parts[1].write_bytes(b'{"error": "rate limited"}' * 20)
    elif damage == "empty":
        parts[1].write_bytes(b"")
    else:
        parts[1].unlink()
    out = tmp_path / "out"
    book = make_book()
    with pytest.raises(AudioError) as info:
        assemble_chapter(book, book.chapters[2], segments_for(3, [Pause.SENTENCE] * 3), sources(parts), out, SETTINGS)
    err = info.value
    assert isinstance(err, PartDecodeError)
    assert (err.chapter, err.segment) == (3, 1)
    assert "chapter 3" in str(err) and "segment 1" in str(err)
    assert list(out.iterdir()) == []  # neither the MP3 nor its .part


def test_reassembly_replaces_the_old_file(tmp_path: Path) -> None:
    book = make_book(1)
    seg = segments_for(1, [Pause.END])
    first = assemble_chapter(
        book, book.chapters[0], seg, sources(make_parts(tmp_path / "a", [300])), tmp_path, SETTINGS
    )
    second = assemble_chapter(
        book, book.chapters[0], seg, sources(make_parts(tmp_path / "b", [900])), tmp_path, SETTINGS
    )
    assert first.path == second.path and second.duration_ms > first.duration_ms + 500
    assert [p.name for p in tmp_path.glob("*.mp3*")] == [second.path.name]


def test_mismatched_segments_and_parts_is_a_bug(tmp_path: Path) -> None:
    book = make_book(1)
    with pytest.raises(ValueError):
        assemble_chapter(book, book.chapters[0], segments_for(1, [Pause.END]), [], tmp_path, SETTINGS)


# --------------------------------------------------------------------------------------------- subtitles

TIME = r"(\d\d):(\d\d):(\d\d)[.,](\d\d\d)"


def parse_cues(text: str, fmt: str) -> list[tuple[int, int, str]]:
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n")
        text = text[len("WEBVTT\n\n") :]
    sep = "," if fmt == "srt" else "."
    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), 1):
        ident, timing, body = block.split("\n")
        assert ident == str(number)
        m = re.fullmatch(f"{TIME} --> {TIME}".replace("[.,]", re.escape(sep)), timing)
        assert m, timing
        g = [int(x) for x in m.groups()]
        to_ms = lambda h, mi, s, ms: ((h * 60 + mi) * 60 + s) * 1000 + ms  # noqa: E731
        cues.append((to_ms(*g[:4]), to_ms(*g[4:]), body))
    return cues


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
@pytest.mark.parametrize("join", JOINS)
def test_subtitles_follow_the_audio(tmp_path: Path, fmt: str, join: str) -> None:
    lengths = [600, 350, 800, 450]
    pauses = [Pause.TITLE, Pause.SENTENCE, Pause.PARAGRAPH, Pause.END]
    parts = make_parts(tmp_path / "parts", lengths)
    part_frames = [assembled_samples(p.read_bytes(), join) for p in parts]
    book = make_book()
    s = dataclasses.replace(JOINS[join], subtitles=fmt)
    segs = segments_for(1, pauses)
    result = assemble_chapter(book, book.chapters[0], segs, sources(parts), tmp_path / "out", s)

    sub = result.path.with_suffix("." + fmt)
    assert sorted(p.name for p in sub.parent.iterdir()) == sorted([result.path.name, sub.name])
    cues = parse_cues(sub.read_text(encoding="utf-8"), fmt)
    assert len(cues) == len(segs)
    starts = expected_starts_ms(part_frames, pauses, join)
    for (start, end, text), want, f, seg in zip(cues, starts, part_frames, segs, strict=True):
        assert abs(start - want) <= 1
        assert abs((end - start) - f * 1000 / RATE) <= 1
        if fmt == "vtt":
            assert text == seg.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        else:
            assert text == seg.text
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:], strict=False))  # monotonic, never overlapping


# --------------------------------------------------------------------------------------------- book outputs


@pytest.fixture(scope="module")
def three_chapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Book, list[ChapterAudio], Path]:
    tmp = tmp_path_factory.mktemp("book")
    book = make_book(3, title="A Book: Of Tests", author="Ann Author", cover=tiny_png(), cover_mime="image/png")
    out = tmp / "out"
    audios = []
    for chapter, lengths in zip(book.chapters, ([800, 600], [1500], [400, 400, 700]), strict=True):
        parts = make_parts(tmp / f"parts{chapter.index}", lengths)
        pauses = [Pause.SENTENCE] * (len(lengths) - 1) + [Pause.END]
        audios.append(
            assemble_chapter(book, chapter, segments_for(chapter.index, pauses), sources(parts), out, SETTINGS)
        )
    return book, audios, out


def test_playlist(three_chapters: tuple[Book, list[ChapterAudio], Path]) -> None:
    book, audios, out = three_chapters
    path = write_playlist(out, book, audios)
    assert path == out / "A Book - Of Tests.m3u"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U"
    entries = [line for line in lines[1:] if not line.startswith("#")]
    infos = [line for line in lines if line.startswith("#EXTINF:")]
    assert entries == [a.path.name for a in audios]  # relative, in order
    for info, audio in zip(infos, audios, strict=True):
        seconds, title = info[len("#EXTINF:") :].split(",", 1)
        assert int(seconds) == round(frames(audio.path.read_bytes()) / RATE)
        assert title == audio.chapter.title
    assert not list(out.glob("*.part"))


def test_m4b_chapters_match_real_durations(three_chapters: tuple[Book, list[ChapterAudio], Path]) -> None:
    book, audios, out = three_chapters
    path = build_m4b(out, book, audios, SETTINGS)
    assert path == out / "A Book - Of Tests.m4b"
    assert not list(out.glob("*.part"))
    m4b = MP4(path)
    chapters = list(m4b.chapters or [])
    assert [c.title for c in chapters] == [a.chapter.title for a in audios]
    real = [frames(a.path.read_bytes()) / RATE for a in audios]
    cumulative = [sum(real[:i]) for i in range(len(real))]
    assert [c.start for c in chapters] == pytest.approx(cumulative, abs=0.03)
    assert m4b.info.length == pytest.approx(sum(real), abs=0.1)  # mutagen counts AAC priming too
    assert m4b.tags is not None
    assert m4b.tags["©nam"] == [book.title] and m4b.tags["©ART"] == ["Ann Author"]
    assert m4b.tags["©alb"] == [book.title] and m4b.tags["stik"] == [2]
    assert bytes(m4b.tags["covr"][0]) == book.cover


def test_m4b_without_cover_and_failure(three_chapters: tuple[Book, list[ChapterAudio], Path], tmp_path: Path) -> None:
    book, audios, _ = three_chapters
    plain = Book(book.title, book.chapters, author=None)
    path = build_m4b(tmp_path, plain, audios[:1], SETTINGS)
    assert "covr" not in (MP4(path).tags or {})

    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not audio at all" * 100)
    bad = [audios[0], ChapterAudio(audios[1].chapter, broken, 1000)]
    out = tmp_path / "bad"
    with pytest.raises(AudioError, match="broken.mp3"):
        build_m4b(out, book, bad, SETTINGS)
    assert list(out.iterdir()) == []


def test_a_packed_part_gets_cues_of_one_or_two_sentences_timed_by_their_characters() -> None:
    text = "One. Two is here.\nThree! Four? Five is the last sentence of this part."
    cues = segment_cues(text, 1000, 4000)
    assert [c.text for c in cues] == ["One. Two is here.", "Three! Four?", "Five is the last sentence of this part."]
    assert cues[0].start_ms == 1000 and cues[-1].end_ms == 4000  # the part's real edges
    assert all(a.end_ms == b.start_ms for a, b in zip(cues, cues[1:], strict=False))
    lengths = [len(c.text) for c in cues]
    for cue, chars in zip(cues, lengths, strict=True):
        assert abs((cue.end_ms - cue.start_ms) - 3000 * chars / sum(lengths)) <= 1
    long = "A sentence that goes on for quite a while, as the sentences in older novels so often tend to do. " * 3
    assert len(segment_cues(long.strip(), 0, 900)) == 3  # two long sentences do not share a cue


def one_frame(part: bytes) -> bytes:
    """The first audio frame of a part alone: what a server may answer for "I." or "No."."""
    found = mp3.parse_frames(part)
    return part[found.offsets[0] : found.offsets[1]]


@pytest.mark.parametrize("join", JOINS)
def test_a_one_frame_part_assembles_and_the_chapter_decodes_cleanly(tmp_path: Path, join: str) -> None:
    parts = make_parts(tmp_path / "parts", [400, 300, 500])
    for p in (parts[0], parts[2]):
        p.write_bytes(one_frame(p.read_bytes()))
    book = make_book(1)
    segs = segments_for(1, [Pause.SENTENCE, Pause.PARAGRAPH, Pause.END])
    result = assemble_chapter(book, book.chapters[0], segs, sources(parts), tmp_path / "out", JOINS[join])
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(result.path), "-f", "null", "-"], capture_output=True, check=False
    )
    assert proc.returncode == 0 and proc.stderr == b""  # not one decoding error in the joined file
    got = frames(result.path.read_bytes())
    expected = sum(assembled_samples(p.read_bytes(), join) for p in parts)
    expected += sum(pause_samples(ms, join) for ms in (300, 150, 400, 300))
    assert abs(got - expected) <= 576 * len(parts)  # within a frame a part
    assert abs(result.duration_ms - got * 1000 / RATE) <= 25 * len(parts)
