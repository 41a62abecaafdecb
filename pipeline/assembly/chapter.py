"""Assembly: a chapter's audio parts become one tagged MP3 (plus subtitles); a book's chapters become a
playlist and, on request, one M4B with chapter markers.

Memory stays bounded by one *part*, not one chapter: each part is decoded, its PCM written straight into
a single ffmpeg encoder's stdin, and dropped. Nothing is joined with ``+=`` (quadratic copying) and no
chapter-sized buffer is ever built. Timings are counted in samples, so cue and chapter marks are exact,
not estimates.

Every file is written under a temporary name that does not carry the final extension (``x.mp3.part``) and
renamed into place only when complete, so a crash never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mutagen.id3 import APIC, ID3, TALB, TCON, TIT1, TIT2, TLAN, TPE1, TPE2, TRCK, Encoding

from pipeline import mp3
from pipeline.assembly import loudness
from pipeline.chunker import split_sentences
from pipeline.config import BookOptions
from pipeline.errors import AudioError
from pipeline.files import atomic_write
from pipeline.media import decode, ffmpeg_exe
from pipeline.models import Book, Chapter, ChapterAudio, Pause, Segment
from pipeline.textfacts import iso639_2

log = logging.getLogger("audiobook")  # one logger: the CLI formats it for terminals and cron

M4B_BITRATE = "64k"  # AAC-LC mono speech is transparent well below MP3's 128k
# LAME's quality (-q, ffmpeg's -compression_level) for a chapter encoded from levelled parts. It sets how hard
# LAME works (noise shaping, Huffman search), not the bitrate: CBR files are the same size. At 7 LAME still runs
# its psychoacoustic model (block switching) but shapes no noise. At 128 kbps for mono 24 kHz speech (5 bits a
# sample) that costs nothing audible; by the numbers it is cleaner: the default's shaping lets noise rise to what
# its model calls masked, q 7 just quantizes finely. Measured on 15 minutes of eSpeak speech levelled to -18 LUFS,
# against LAME's default (q 3; q 5 measures alike): LAME alone 355x vs 166x real time; SNR (gain-compensated)
# 45 vs 24 dB; wideband PESQ 4.59 vs 4.15 (16 excerpts of 20 s); a whole levelled 30-minute chapter 14 vs 19 s of
# CPU. Its gain is the default's (LAME_GAIN_DB, -0.45 dB: tested). q 9 gives q 7's bytes. The plain decoded path
# keeps LAME's default, so a chapter made without levelling stays byte for byte what it was.
LEVELLED_MP3_QUALITY = 7
_SAMPLE_BYTES = 2  # signed 16-bit mono PCM throughout
_CHUNK = 1 << 16

# --------------------------------------------------------------------------------------------- file names

_TITLE_MAX_CHARS = 80
# 255 bytes is the per-name limit of ext4 and most others; keep room for the ".part" of the temporary name.
_NAME_MAX_BYTES = 250
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
# Windows forbids these in names; map the common ones to look-alikes a reader still understands.
_REPLACE = str.maketrans({":": " - ", "/": "-", "\\": "-", "|": "-", '"': "'", "<": "", ">": "", "?": "", "*": ""})
# Bidirectional overrides can make "evil\u202egpm.exe" display as "evilexe.mp3": never keep them.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean_text(text: str) -> str:
    """One line of text that is safe inside a file name (Windows rules, which are the strictest)."""
    chars = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _BIDI:
            continue
        category = unicodedata.category(ch)
        if category in ("Zl", "Zp") or ch.isspace():
            chars.append(" ")
        elif category != "Cc":  # control characters, NUL included
            chars.append(ch)
    cleaned = " ".join("".join(chars).translate(_REPLACE).split())
    return re.sub(r"\.{2,}", "…", cleaned)  # no ".." anywhere: it means "parent" to too many tools


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _safe_stem(stem: str) -> str:
    """No leading dot (hidden file), no trailing dot or space (Windows drops them), no device name."""
    stem = stem.lstrip(" .").rstrip(" .")
    device, dot, rest = stem.partition(".")
    if device.rstrip(" ").upper() in _RESERVED:  # "aux.txt" is as reserved as "AUX" on Windows
        stem = f"{device.rstrip(' ')}_{dot}{rest}"
    return stem


def chapter_filename(index: int, total: int, title: str, ext: str = "mp3") -> str:
    """``"01 Down the Rabbit-Hole.mp3"``: numbered so the files sort, titled so a listener can find one."""
    if not ext.isalnum():
        raise ValueError(f"bad extension {ext!r}")
    width = max(2, len(str(max(total, index))))
    prefix, suffix = f"{index:0{width}d} ", f".{ext}"
    text = _clean_text(title)[:_TITLE_MAX_CHARS].rstrip(" .")
    text = _truncate_utf8(text, _NAME_MAX_BYTES - len(prefix) - len(suffix)).rstrip(" .")
    if all(unicodedata.category(ch)[0] in "PZ" for ch in text):  # "", "…", "- -": nothing to recognise
        text = f"Chapter {index}"
    return _safe_stem(prefix + text) + suffix


def book_stem(book: Book) -> str:
    """The sanitized book title used for the playlist and the M4B (``"Audiobook"`` when nothing is left)."""
    text = _clean_text(book.title)[:150]
    return _safe_stem(_truncate_utf8(text, 200)) or "Audiobook"


# --------------------------------------------------------------------------------------------- helpers


def _frames(ms: int, rate: int) -> int:
    return rate * ms // 1000


def _ms(frames: int, rate: int) -> int:
    return round(frames * 1000 / rate)


def _last_line(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error output"


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _PcmEncoder:
    """One ffmpeg process that reads s16le mono PCM on stdin and writes ``out`` with ``codec_args``."""

    def __init__(self, out: Path, rate: int, codec_args: Sequence[str], what: str):
        self.what = what
        self.frames = 0
        # stderr goes to a file, not a pipe, so ffmpeg can never block on it; closed in close().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-f", "s16le",
               "-ar", str(rate), "-ac", "1", "-i", "pipe:0", "-ar", str(rate), "-ac", "1", *codec_args,
               "-y", str(out)]  # fmt: skip
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        except OSError as exc:
            self._stderr.close()
            raise AudioError(f"cannot start ffmpeg for {what}: {exc}") from exc

    def _error(self) -> AudioError:
        self._proc.wait()
        self._stderr.seek(0)
        return AudioError(f"ffmpeg failed writing {self.what}: {_last_line(self._stderr.read())}")

    def write(self, pcm: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(pcm)
        except (BrokenPipeError, ValueError):
            raise self._error() from None
        self.frames += len(pcm) // _SAMPLE_BYTES

    def finish(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise self._error()

    def close(self) -> None:
        """Release everything; kills ffmpeg when ``finish`` was not reached (an error or Ctrl-C)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._stderr.close()


@contextlib.contextmanager
def _encoder(out: Path, rate: int, codec_args: Sequence[str], what: str) -> Iterator[_PcmEncoder]:
    enc = _PcmEncoder(out, rate, codec_args, what)
    try:
        yield enc
        enc.finish()
    finally:
        enc.close()


# --------------------------------------------------------------------------------------------- chapters


# A part's bytes, read when the assembler reaches it (so a chapter never holds all of them at once); None when
# the part is gone from the store.
PartSource = Callable[[], bytes | None]


class PartDecodeError(AudioError):
    """A stored part is not decodable audio. The runner evicts that segment's part so it is made again."""

    def __init__(self, message: str, *, chapter: int, segment: int):
        super().__init__(message)
        self.chapter = chapter
        self.segment = segment


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str


CUE_MAX_CHARS = 160  # two sentences share a cue only while they stay this short together: readable at a glance


def segment_cues(text: str, start_ms: int, end_ms: int) -> list[Cue]:
    """Cues for one part: one or two sentences each, never across a paragraph break (a line break in a packed
    segment), timed inside the part in proportion to their characters, the last ending at the part's real end.
    """
    groups: list[str] = []
    for paragraph in text.split("\n"):
        spans, at = [], 0
        for sentence in split_sentences(paragraph):  # exact substrings, in order: their spans by search
            at = paragraph.index(sentence, at)
            spans.append((at, at + len(sentence)))
            at += len(sentence)
        group: list[tuple[int, int]] = []
        for span in spans:
            if group and (len(group) == 2 or span[1] - group[0][0] > CUE_MAX_CHARS):
                groups.append(paragraph[group[0][0] : group[-1][1]])  # as written: no space inserted in CJK
                group = []
            group.append(span)
        if group:
            groups.append(paragraph[group[0][0] : group[-1][1]])
    groups = groups or [text]
    total = max(1, sum(len(g) for g in groups))
    cues, done = [], 0
    for words in groups:
        begin = start_ms + (end_ms - start_ms) * done // total
        done += len(words)
        cues.append(Cue(begin, start_ms + (end_ms - start_ms) * done // total, words))
    return cues


def _pause_ms(pause: Pause, settings: BookOptions) -> int:
    return {
        Pause.SENTENCE: settings.sentence_pause_ms,
        Pause.PARAGRAPH: settings.paragraph_pause_ms,
        Pause.TITLE: settings.title_pause_ms,
        Pause.END: 0,
    }[pause]


def _part_error(chapter: Chapter, index: int, reason: str) -> PartDecodeError:
    return PartDecodeError(
        f"chapter {chapter.index} ({chapter.title!r}), segment {index}: its part is not usable audio "
        f"({reason}); it must be synthesized again",
        chapter=chapter.index,
        segment=index,
    )


def _read_part(chapter: Chapter, index: int, part: PartSource) -> bytes:
    data = part()
    if data is None:
        raise _part_error(chapter, index, "it is no longer in the cache")
    return data


def _load_part(chapter: Chapter, index: int, part: PartSource, fmt: str, rate: int) -> bytes:
    """The part as s16le mono PCM at ``rate``; PartDecodeError names chapter and segment."""
    data = _read_part(chapter, index, part)
    try:
        if fmt == "mp3":  # read by its frames: any valid answer decodes, a single frame included
            pcm = mp3.decode_part_pcm(data, rate)
        else:
            audio = decode(data, fmt).set_channels(1).set_frame_rate(rate).set_sample_width(_SAMPLE_BYTES)
            pcm = audio.raw_data
    except AudioError as exc:
        raise _part_error(chapter, index, str(exc)) from exc
    if not pcm:
        raise _part_error(chapter, index, "it decodes to no sound at all")
    return pcm


def _load_levelled(
    chapter: Chapter,
    index: int,
    part: PartSource,
    fmt: str,
    rate: int,
    target: loudness.LoudnessTarget,
    previous: loudness.PartLevel | None,
) -> loudness.LevelledPart:
    """The part decoded and measured by one ffmpeg, trimmed at its silent edges and brought to ``target``
    (``previous``: the part before it, for a part too short to measure); PartDecodeError as ``_load_part``."""
    data = _read_part(chapter, index, part)
    try:
        decoded = loudness.decode_and_measure(data, fmt, rate, true_peak=target.measures_true_peak)
    except AudioError as exc:  # NotAudio included
        raise _part_error(chapter, index, str(exc)) from exc
    if not decoded.pcm:
        raise _part_error(chapter, index, "it decodes to no sound at all")
    return loudness.level_part(decoded, target, previous=previous)


def _decoded_parts(
    chapter: Chapter, parts: Sequence[PartSource], fmt: str, rate: int, target: loudness.LoudnessTarget | None
) -> Generator[tuple[bytes, loudness.PartLevel | None], None, None]:
    """Each part's PCM in order, the next one decoding in a helper thread meanwhile; with a ``target``, each
    part levelled (trimmed, its gain applied) and its level, else the part as decoded and None.

    The decoder is an ffmpeg subprocess, so decoding part i+1 overlaps encoding part i on another core
    (measured on 2 cores: 30 minutes of parts went from ~143x to 160-210x real time). At most two parts
    are held in memory. Levelling runs in the helper too: part i+1 is submitted only once part i is done,
    so its ``previous`` level is known, and the parts are levelled in order as ``level_part`` needs.
    """

    def load(index: int, previous: loudness.PartLevel | None) -> tuple[bytes, loudness.PartLevel | None]:
        if target is None:
            return _load_part(chapter, index, parts[index], fmt, rate), None
        levelled = _load_levelled(chapter, index, parts[index], fmt, rate, target, previous)
        return levelled.pcm, levelled.level

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode-part") as pool:
        try:
            ahead = pool.submit(load, 0, None) if parts else None
            for i in range(len(parts)):
                assert ahead is not None
                pcm, level = ahead.result()
                following = i + 1
                if following < len(parts):
                    ahead = pool.submit(load, following, level)
                yield pcm, level
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _tag_mp3(path: Path, book: Book, chapter: Chapter, title: str, track: str, settings: BookOptions) -> None:
    tags = ID3()
    utf16 = Encoding.UTF16  # ID3v2.3 knows only Latin-1 and UTF-16; v2.3 is what most players read best
    tags.add(TIT2(encoding=utf16, text=[title]))
    if chapter.part:  # the volume or part above the chapter: ID3's content group, which players show as grouping
        tags.add(TIT1(encoding=utf16, text=[" ".join(chapter.part.split())]))
    tags.add(TALB(encoding=utf16, text=[book.title]))
    if book.author:
        tags.add(TPE1(encoding=utf16, text=[book.author]))
        tags.add(TPE2(encoding=utf16, text=[book.author]))
    tags.add(TRCK(encoding=utf16, text=[track]))
    if settings.genre:
        tags.add(TCON(encoding=utf16, text=[settings.genre]))
    language = iso639_2(settings.language or book.language)
    if language:
        tags.add(TLAN(encoding=utf16, text=[language]))
    if book.cover:
        tags.add(APIC(encoding=utf16, mime=cover_mime(book), type=3, desc="Cover", data=book.cover))
    try:
        tags.save(str(path), v2_version=3)
    except Exception as exc:  # mutagen raises its own MutagenError, OSError, struct.error ...
        raise AudioError(f"cannot write tags to {path}: {exc}") from exc


def assemble_chapter(
    book: Book,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    out_dir: Path,
    settings: BookOptions,
    *,
    total_chapters: int | None = None,
) -> ChapterAudio:
    """Join ``parts`` (``parts[i]`` speaks ``segments[i]``) with pauses into ``out_dir/NN Title.mp3``, tagged.

    Silence: ``chapter_pad_ms`` before the first and after the last segment; after every other segment the
    pause its ``pause_after`` names. The last segment's own pause is replaced by the pad, so every chapter
    ends alike whatever the chunker marked it with.

    Two ways to join. Lossless, where it applies: every part is MP3 of one stream format, at the chapter's
    sample rate and (when constant) its bitrate, what one endpoint and voice answer, and no loudness
    normalization is asked for; the chapter is then the parts' own frames with pauses of silent frames,
    written once, no decode and no re-encode. Otherwise each part is decoded and the chapter encoded once.

    With ``settings.loudness`` ("ebu" or "acx", ``loudness.TARGETS``) every part is decoded and levelled: its
    silent edges trimmed (cues and the chapter's length follow the trimmed parts), its gain set to bring it to
    the target, the chapter encoder's limiter holding the ceiling; the result's ``loudness`` sums it up.
    """
    if len(segments) != len(parts):
        raise ValueError(f"{len(segments)} segments but {len(parts)} parts")
    if not segments:
        raise ValueError(f"chapter {chapter.index} has no segments to assemble")
    total = max(total_chapters or len(book.chapters), chapter.index)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / chapter_filename(chapter.index, total, chapter.title)
    tmp = final.with_name(final.name + ".part")
    sub_final = final.with_suffix("." + settings.subtitles) if settings.subtitles else None
    title = " ".join(chapter.title.split()) or f"Chapter {chapter.index}"
    last = len(segments) - 1
    # The silence before the first part, then after each part.
    pauses = [settings.chapter_pad_ms] + [
        settings.chapter_pad_ms if i == last else _pause_ms(s.pause_after, settings) for i, s in enumerate(segments)
    ]
    try:
        joined = None
        summary = None
        if settings.part_format == "mp3" and not settings.loudness:
            joined = _join_lossless(tmp, chapter, segments, parts, pauses, settings)
        if joined is None:
            joined, summary = _join_decoded(tmp, chapter, segments, parts, pauses, settings)
        duration_ms, cues = joined
        _tag_mp3(tmp, book, chapter, title, f"{chapter.index}/{total}", settings)
        if sub_final is not None:
            atomic_write(sub_final, format_subtitles(cues, settings.subtitles or "srt"))
        os.replace(tmp, final)  # last, so an existing MP3 always means a complete chapter
    except BaseException:
        _remove(tmp)
        raise
    return ChapterAudio(chapter=chapter, path=final, duration_ms=duration_ms, loudness=summary)


def _join_lossless(
    out: Path,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    pauses: Sequence[int],
    settings: BookOptions,
) -> tuple[int, list[Cue]] | None:
    """The parts' frames in order with silent frames between, one part in memory at a time; None when the
    parts cannot be joined so (another format among them, or another rate or bitrate than the settings')."""
    cues: list[Cue] = []
    kbps = int(settings.bitrate.removesuffix("k"))
    with open(out, "w+b") as fh:
        writer = mp3.LosslessWriter(fh)
        writer.add_silence(pauses[0])
        for i, (segment, part) in enumerate(zip(segments, parts, strict=True)):
            data = _read_part(chapter, i, part)
            try:
                info = mp3.check_part(data)
                if info.format.sample_rate != settings.sample_rate or info.bitrate_kbps not in (None, kbps):
                    return None  # the settings ask for another rate or bitrate: only an encode gives it
                span = writer.add_part(data)
            except mp3.FormatMismatch:
                return None
            except mp3.NotAudio as exc:
                raise _part_error(chapter, i, str(exc)) from exc
            cues.extend(segment_cues(segment.text, span.start_ms, span.end_ms))
            writer.add_silence(pauses[i + 1])
        result = writer.close()
    return result.duration_ms, cues


def _join_decoded(
    out: Path,
    chapter: Chapter,
    segments: Sequence[Segment],
    parts: Sequence[PartSource],
    pauses: Sequence[int],
    settings: BookOptions,
) -> tuple[tuple[int, list[Cue]], loudness.ChapterLoudness | None]:
    """Each part decoded to PCM (the next one while this one is encoded) and the chapter encoded once; with a
    loudness target, each part levelled on the way and the encoder limiting, and the chapter's loudness."""
    rate = settings.sample_rate
    target = loudness.TARGETS[settings.loudness] if settings.loudness else None
    silence: dict[int, bytes] = {}

    def pad(enc: _PcmEncoder, ms: int) -> None:
        n = _frames(ms, rate)
        if n:
            enc.write(silence.setdefault(n, bytes(n * _SAMPLE_BYTES)))

    cues: list[Cue] = []
    levels: list[loudness.PartLevel] = []
    codec = ["-c:a", "libmp3lame", "-b:a", settings.bitrate, "-id3v2_version", "0", "-write_xing", "1",
             "-map_metadata", "-1", "-f", "mp3"]  # fmt: skip
    if target is not None:
        limiter = target.encoder_filter(rate)
        codec = [*(["-af", limiter] if limiter else []), "-compression_level", str(LEVELLED_MP3_QUALITY), *codec]
    with (
        _encoder(out, rate, codec, f"chapter {chapter.index} to {out}") as enc,
        contextlib.closing(_decoded_parts(chapter, parts, settings.part_format, rate, target)) as decoded,
    ):
        pad(enc, pauses[0])
        for i, (segment, (pcm, level)) in enumerate(zip(segments, decoded, strict=True)):
            start = enc.frames
            enc.write(pcm)  # levelled: trimmed, so the cues are timed by what is really written
            cues.extend(segment_cues(segment.text, _ms(start, rate), _ms(enc.frames, rate)))
            if level is not None:
                levels.append(level)
            pad(enc, pauses[i + 1])
        total_frames = enc.frames
    summary = None
    if target is not None:
        silent = total_frames - sum(level.samples for level in levels)
        summary = loudness.chapter_loudness(levels, silence_samples=silent, rate=rate)
    return (_ms(total_frames, rate), cues), summary


# --------------------------------------------------------------------------------------------- text outputs


def cover_mime(book: Book) -> str:
    if book.cover_mime:
        return book.cover_mime
    if book.cover and book.cover.startswith(b"\x89PNG"):
        return "image/png"
    return "image/jpeg"


def _timestamp(ms: int, sep: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def format_subtitles(cues: Sequence[Cue], fmt: str) -> str:
    """SRT or WebVTT text: one cue per segment, text on one line (a blank line would end the cue)."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"unknown subtitle format {fmt!r}")
    blocks = ["WEBVTT"] if fmt == "vtt" else []
    sep = "." if fmt == "vtt" else ","
    for number, cue in enumerate(cues, 1):
        text = " ".join(cue.text.split()).replace("-->", "→")
        if fmt == "vtt":  # WebVTT cue text is markup: escape what would start a tag or an entity
            text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        timing = f"{_timestamp(cue.start_ms, sep)} --> {_timestamp(cue.end_ms, sep)}"
        blocks.append(f"{number}\n{timing}\n{text}")
    return "\n\n".join(blocks) + "\n"


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_playlist(out_dir: Path, book: Book, chapters: Sequence[ChapterAudio]) -> Path:
    """``<book title>.m3u``: extended M3U, UTF-8, chapter files by relative name, in the order given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["#EXTM3U", f"#PLAYLIST:{' '.join(book.title.split())}"]
    for ch in chapters:
        title = " ".join(ch.chapter.title.split()) or f"Chapter {ch.chapter.index}"
        lines.append(f"#EXTINF:{round(ch.duration_ms / 1000)},{title}")
        lines.append(_rel(ch.path, out_dir))
    path = out_dir / f"{book_stem(book)}.m3u"
    atomic_write(path, "\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- M4B


def _ffmeta_escape(value: str) -> str:
    value = " ".join(value.split())
    return re.sub(r"([=;#\\])", r"\\\1", value)


def ffmetadata(book: Book, titles: Sequence[str], bounds: Sequence[tuple[int, int]], rate: int, genre: str) -> str:
    """An ``;FFMETADATA1`` file: book tags and one [CHAPTER] per chapter, marks in samples (exact)."""
    lines = [";FFMETADATA1", f"title={_ffmeta_escape(book.title)}", f"album={_ffmeta_escape(book.title)}"]
    if book.author:
        lines += [f"artist={_ffmeta_escape(book.author)}", f"album_artist={_ffmeta_escape(book.author)}"]
    if genre:
        lines.append(f"genre={_ffmeta_escape(genre)}")
    lines.append("media_type=2")  # iTunes "stik" 2: Audiobook, so Apple players shelve it as one
    for title, (start, end) in zip(titles, bounds, strict=True):
        lines += ["", "[CHAPTER]", f"TIMEBASE=1/{rate}", f"START={start}", f"END={end}",
                  f"title={_ffmeta_escape(title)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _stream_decoded(path: Path, rate: int, enc: _PcmEncoder) -> int:
    """Decode one chapter file with ffmpeg straight into ``enc``; returns the frames it really holds."""
    start = enc.frames
    with tempfile.TemporaryFile() as err:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-nostdin", "-i", str(path),
               "-vn", "-f", "s16le", "-ac", "1", "-ar", str(rate), "pipe:1"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(_CHUNK):
                enc.write(chunk)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code != 0 or enc.frames == start:
            err.seek(0)
            raise AudioError(f"cannot decode chapter file {path} for the M4B: {_last_line(err.read())}")
    return enc.frames - start


def _run_ffmpeg(args: Sequence[str], what: str) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                          capture_output=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg failed {what}: {_last_line(proc.stderr)}")


def build_m4b(out_dir: Path, book: Book, chapters: Sequence[ChapterAudio], settings: BookOptions) -> Path:
    """``<book title>.m4b``: the chapter MP3s as one AAC audiobook with chapter markers, tags and cover.

    Pass 1 decodes each chapter file and streams its PCM into one AAC encoder, counting samples, so every
    chapter mark is the real decoded length, exactly what a player hears, never an estimate. Pass 2 copies
    that audio (no re-encode) into the final container with the marks, tags and cover.
    """
    if not chapters:
        raise AudioError(f"no chapter files to build an M4B for {book.title!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = settings.sample_rate
    stem = book_stem(book)
    final = out_dir / f"{stem}.m4b"
    audio_tmp = out_dir / f"{stem}.m4b.audio.part"
    tmp = out_dir / f"{stem}.m4b.part"
    try:
        bounds: list[tuple[int, int]] = []
        aac = ["-c:a", "aac", "-b:a", M4B_BITRATE, "-f", "ipod"]
        with _encoder(audio_tmp, rate, aac, f"the M4B audio {audio_tmp}") as enc:
            for ch in chapters:
                start = enc.frames
                _stream_decoded(ch.path, rate, enc)
                bounds.append((start, enc.frames))
        titles = [" ".join(ch.chapter.title.split()) or f"Chapter {ch.chapter.index}" for ch in chapters]
        with tempfile.TemporaryDirectory(prefix="m4b-") as work:
            meta = Path(work) / "chapters.txt"
            meta.write_text(ffmetadata(book, titles, bounds, rate, settings.genre), encoding="utf-8")
            inputs = ["-i", str(audio_tmp), "-f", "ffmetadata", "-i", str(meta)]
            maps = ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1"]
            tail = ["-c", "copy", "-movflags", "+faststart", "-f", "ipod", "-y", str(tmp)]
            if book.cover:
                cover = Path(work) / ("cover.png" if cover_mime(book) == "image/png" else "cover.jpg")
                cover.write_bytes(book.cover)
                try:
                    _run_ffmpeg([*inputs, "-i", str(cover), *maps, "-map", "2:v", "-disposition:v:0",
                                 "attached_pic", *tail], f"writing {tmp}")  # fmt: skip
                except AudioError as exc:  # a damaged cover must not cost the whole audiobook
                    log.warning("M4B cover left out: %s", exc)
                    _run_ffmpeg([*inputs, *maps, *tail], f"writing {tmp}")
            else:
                _run_ffmpeg([*inputs, *maps, *tail], f"writing {tmp}")
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _remove(audio_tmp)
    return final
