"""What a run and a book are asked to do, as plain values: the options the config loader (``config``) fills in
from defaults, files, the environment and flags. Apart from the loader, so the stages that only read them
(assembly, the jobs a worker runs) do not load the backend registry and the rate governor it validates with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import VoiceSpec
from pipeline.store import is_url


@dataclass(frozen=True)
class RunOptions:
    """One per run, whatever books it holds."""

    concurrency: int = 8  # requests in flight at once, for every book of the run together
    engine: str = "local"  # "local": this process; "celery": workers on any machine, through ``broker``
    broker: str | None = None  # redis://HOST:6379/0, for the celery engine and its workers
    redelivery_s: float = 300.0  # celery: a task whose worker died is given to another after this long


@dataclass(frozen=True)
class BookOptions:
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    instructions: str | None = None
    speed: float | None = None
    response_format: str | None = None  # None: not sent, the server answers MP3
    language: str | None = None  # overrides the book's own language
    max_chars: int = 500
    pack: bool | None = None  # sentences across paragraphs into as few requests as fit; None: as the backend says
    lexicon: Path | None = None  # pronunciation rules for the text sent to the voice (see pipeline.lexicon)
    # Where this book's finished parts are kept: a folder, or a bucket URL (s3://bucket/prefix) that workers on
    # several machines share; the run opens one store per distinct location. Read as a string, not a Path,
    # which would turn s3://b/p into s3:/b/p. None: $XDG_CACHE_HOME/audiobook-pipeline or ~/.cache/...
    cache_dir: str | Path | None = None
    sample_rate: int = 24_000
    bitrate: str = "128k"
    sentence_pause_ms: int = 250
    paragraph_pause_ms: int = 700
    title_pause_ms: int = 1000
    chapter_pad_ms: int = 500  # silence before the first and after the last segment of a chapter
    announce_titles: bool = True
    include_matter: bool = False  # read front/back matter (title page, contents, licence) too
    subtitles: str | None = None  # "srt" or "vtt"
    # Even loudness, part by part: "ebu" (-18 LUFS) or "acx" (audiobook stores' RMS and peak rules); None: off,
    # and chapters are joined losslessly where the parts allow.
    loudness: str | None = None
    m4b: bool = False  # the older flag: an M4B besides the chapter MP3s, i.e. ``format = "both"``
    # What a player library sees in the book folder (see ``names.chapter_folder``): "mp3" chapter files,
    # "m4b" one M4B (its chapter MP3s kept in a hidden folder), "both" the M4B with the MP3s in a subfolder a
    # library scan skips. None: "both" with ``m4b``, else "mp3".
    format: str | None = None
    genre: str = "Audiobook"  # used only when the book has no subjects of its own
    # What players and libraries show besides the book's own metadata: set, they override what the reader found.
    author: str | None = None
    title: str | None = None
    narrator: str | None = None  # None: the voice and model ("alloy (gpt-4o-mini-tts)")
    series: str | None = None
    series_index: str | None = None
    description: str | None = None
    publisher: str | None = None
    date: str | None = None
    subjects: str | None = None  # "Fantasy; Adventure": split on ";"
    isbn: str | None = None
    asin: str | None = None
    cover: Path | None = None  # an image file to use instead of the book's own cover
    # Verification (pipeline.verify): "timing" checks every part's voiced time and silences against its text
    # (free: one decode a part); "transcribe" adds a transcript check; "off" trusts every answer.
    verify: str = "timing"
    verify_retries: int = 2  # fresh requests for a suspect part before it is reported unverified
    # Only these chapters, by the plan's numbers ("1-3,7,12-", pipeline.selection); None: the whole book.
    chapters: str | None = None
    preview_seconds: float = 60.0  # how much of the first real chapter --preview makes, about

    @property
    def voice_spec(self) -> VoiceSpec:
        return VoiceSpec(self.model, self.voice, self.instructions, self.speed, self.response_format)

    @property
    def output_format(self) -> str:
        """ "mp3", "m4b" or "both": what the book folder holds (``format``, else ``m4b``'s older meaning)."""
        return self.format or ("both" if self.m4b else "mp3")

    @property
    def builds_m4b(self) -> bool:
        return self.output_format != "mp3"

    @property
    def part_format(self) -> str:
        return self.response_format or "mp3"

    @property
    def cache_location(self) -> str:
        """The parts store's location, as ``Stores.at`` takes it: a folder (``~`` expanded) or a URL as given."""
        if self.cache_dir is None:
            return str(default_cache_dir())
        if is_url(str(self.cache_dir)):
            return str(self.cache_dir)
        return str(Path(self.cache_dir).expanduser())


def default_cache_dir() -> Path:
    """The user's cache folder for this program: parts, and the rate limits learned from keys' headers."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "audiobook-pipeline"
