"""The M4B: a book's chapter MP3s as one AAC audiobook with chapter markers, tags and cover."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mutagen.mp4 import MP4, MP4FreeForm

from pipeline.assembly.encoder import CHUNK, PcmEncoder, encoder, last_line, remove, run_ffmpeg
from pipeline.assembly.tags import book_tags, cover_mime
from pipeline.errors import AudioError
from pipeline.media import ffmpeg_exe, require_ffmpeg, start_tool, tool_done
from pipeline.models import Book, ChapterAudio
from pipeline.names import book_stem
from pipeline.options import BookOptions

log = logging.getLogger("audiobook")  # one logger: the CLI formats it for terminals and cron

M4B_BITRATE = "64k"  # AAC-LC mono speech is transparent well below MP3's 128k


def _ffmeta_escape(value: str) -> str:
    """One value for an ffmetadata file: its lines (a description's paragraphs) kept, escaped newlines."""
    lines = [re.sub(r"([=;#\\])", r"\\\1", " ".join(line.split())) for line in value.strip().split("\n")]
    return "\\\n".join(lines)


# What the iPod muxer writes as iTunes atoms (©nam, ©alb, ©ART, aART, ©wrt, ©gen, ©cmt, ©day); the rest
# goes in as iTunes freeform atoms ("----:com.apple.iTunes:series"), which ffprobe (and so Audiobookshelf)
# reads by their names.
_MUXED = ("album", "artist", "album_artist", "composer", "genre", "comment", "date")
FREEFORM = ("series", "series-part", "isbn", "asin", "language", "publisher")
# An M4B's Nero chapter list (chpl) counts its chapters in one byte: past 255 ffprobe, and so Audiobookshelf,
# would read a wrapped count from it. The QuickTime chapter track holds any number; only it is written then.
CHPL_MAX = 255


def ffmetadata(
    book: Book, titles: Sequence[str], bounds: Sequence[tuple[int, int]], rate: int, tags: dict[str, str]
) -> str:
    """An ``;FFMETADATA1`` file: book tags and one [CHAPTER] per chapter, marks in samples (exact)."""
    lines = [";FFMETADATA1", f"title={_ffmeta_escape(book.title)}"]
    lines += [f"{k}={_ffmeta_escape(tags[k])}" for k in _MUXED if tags.get(k)]
    lines.append("media_type=2")  # iTunes "stik" 2: Audiobook, so Apple players shelve it as one
    for title, (start, end) in zip(titles, bounds, strict=True):
        lines += ["", "[CHAPTER]", f"TIMEBASE=1/{rate}", f"START={start}", f"END={end}",
                  f"title={_ffmeta_escape(title)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _add_freeform(path: Path, tags: dict[str, str]) -> None:
    """The tags the muxer has no atom for, as iTunes freeform atoms."""
    extra = {k: tags[k] for k in FREEFORM if tags.get(k)}
    if not extra:
        return
    try:
        m4b = MP4(str(path))
        if m4b.tags is None:
            m4b.add_tags()
        assert m4b.tags is not None
        for key, value in extra.items():
            m4b.tags[f"----:com.apple.iTunes:{key}"] = [MP4FreeForm(value.encode("utf-8"))]
        m4b.save()
    except Exception as exc:  # mutagen raises its own MutagenError, OSError, struct.error ...
        raise AudioError(f"cannot write tags to {path}: {exc}") from exc


def _stream_decoded(path: Path, rate: int, enc: PcmEncoder) -> int:
    """Decode one chapter file with ffmpeg straight into ``enc``; returns the frames it really holds."""
    start = enc.frames
    with tempfile.TemporaryFile() as err:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-nostdin", "-i", str(path),
               "-vn", "-f", "s16le", "-ac", "1", "-ar", str(rate), "pipe:1"]  # fmt: skip
        proc = start_tool(cmd, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(CHUNK):
                enc.write(chunk)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            code = proc.wait()
            tool_done(proc)
        if code != 0 or enc.frames == start:
            err.seek(0)
            raise AudioError(f"cannot decode chapter file {path} for the M4B: {last_line(err.read())}")
    return enc.frames - start


def build_m4b(out_dir: Path, book: Book, chapters: Sequence[ChapterAudio], settings: BookOptions) -> Path:
    """``<book title>.m4b``: the chapter MP3s as one AAC audiobook with chapter markers, tags and cover.

    Pass 1 decodes each chapter file and streams its PCM into one AAC encoder, counting samples, so every
    chapter mark is the real decoded length, exactly what a player hears, never an estimate. Pass 2 copies
    that audio (no re-encode) into the final container with the marks, tags and cover.
    """
    if not chapters:
        raise AudioError(f"no chapter files to build an M4B for {book.title!r}")
    require_ffmpeg("m4b")
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = settings.sample_rate
    stem = book_stem(book)
    final = out_dir / f"{stem}.m4b"
    audio_tmp = out_dir / f"{stem}.m4b.audio.part"
    tmp = out_dir / f"{stem}.m4b.part"
    try:
        bounds: list[tuple[int, int]] = []
        aac = ["-c:a", "aac", "-b:a", M4B_BITRATE, "-f", "ipod"]
        with encoder(audio_tmp, rate, aac, f"the M4B audio {audio_tmp}") as enc:
            for ch in chapters:
                start = enc.frames
                _stream_decoded(ch.path, rate, enc)
                bounds.append((start, enc.frames))
        titles = [" ".join(ch.chapter.title.split()) or f"Chapter {ch.chapter.index}" for ch in chapters]
        with tempfile.TemporaryDirectory(prefix="m4b-") as work:
            meta = Path(work) / "chapters.txt"
            tags = book_tags(book, settings)
            meta.write_text(ffmetadata(book, titles, bounds, rate, tags), encoding="utf-8")
            inputs = ["-i", str(audio_tmp), "-f", "ffmetadata", "-i", str(meta)]
            maps = ["-map", "0:a", "-map_metadata", "1", "-map_chapters", "1"]
            flags = "+faststart+disable_chpl" if len(titles) > CHPL_MAX else "+faststart"
            tail = ["-c", "copy", "-movflags", flags, "-f", "ipod", "-y", str(tmp)]
            if book.cover:
                cover = Path(work) / ("cover.png" if cover_mime(book) == "image/png" else "cover.jpg")
                cover.write_bytes(book.cover)
                try:
                    run_ffmpeg([*inputs, "-i", str(cover), *maps, "-map", "2:v", "-disposition:v:0",
                                 "attached_pic", *tail], f"writing {tmp}")  # fmt: skip
                except AudioError as exc:  # a damaged cover must not cost the whole audiobook
                    log.warning("M4B cover left out: %s", exc)
                    run_ffmpeg([*inputs, *maps, *tail], f"writing {tmp}")
            else:
                run_ffmpeg([*inputs, *maps, *tail], f"writing {tmp}")
        _add_freeform(tmp, tags)
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise
    finally:
        remove(audio_tmp)
    return final
