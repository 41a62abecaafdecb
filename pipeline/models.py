"""Frozen dataclasses that travel between stages: reader -> chunker -> synthesizer -> assembler, and the
unit of work the executors run."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Chapter:
    """One chapter in reading order. ``paragraphs`` are normalized: single spaces, no empty ones."""

    index: int  # 1-based position in the book
    title: str
    paragraphs: tuple[str, ...]
    part: str | None = None  # the volume or part it belongs to ("第一卷 潮起", "Part One"), when the book has them

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.paragraphs)


@dataclass(frozen=True)
class BookInfo:
    """What players and libraries show about a book besides its title and author, as its source tells it.
    Every field is optional: readers fill what their format carries, the job file and flags may override."""

    description: str | None = None  # plain text, paragraphs separated by blank lines
    publisher: str | None = None
    date: str | None = None  # as the source gives it, ISO 8601 where it can ("1818", "2024-05-01")
    subjects: tuple[str, ...] = ()  # genres or subjects, in the source's order
    series: str | None = None
    series_index: str | None = None  # "1", "2.5": kept as text, as series numbers are written
    isbn: str | None = None
    asin: str | None = None
    site: str | None = None  # an article's website or publication
    url: str | None = None  # where an article or a downloaded book came from


@dataclass(frozen=True)
class Book:
    title: str
    chapters: tuple[Chapter, ...]
    author: str | None = None
    language: str | None = None  # BCP 47 primary tag such as "en" or "zh", when known
    cover: bytes | None = None  # image bytes (JPEG or PNG), when the book has one
    cover_mime: str | None = None
    source: Path | None = None
    skipped: tuple[str, ...] = ()  # what the reader left out on purpose (licence, TOC, ...), for the plan
    info: BookInfo = field(default_factory=BookInfo)

    @property
    def characters(self) -> int:
        return sum(c.characters for c in self.chapters)


class Pause(StrEnum):
    """The silence that follows a segment; its length in ms comes from settings."""

    SENTENCE = "sentence"  # after a segment that ends inside a paragraph
    PARAGRAPH = "paragraph"  # after a segment that ends a paragraph
    TITLE = "title"  # after a spoken chapter title
    END = "end"  # after the chapter's last segment


@dataclass(frozen=True)
class Segment:
    """At most ``max_chars`` characters of one chapter, cut at sentence ends. One speech request. Packed segments
    span paragraphs: each "\\n" in ``text`` is a paragraph break, and no other line break occurs."""

    chapter: int  # Chapter.index
    index: int  # 0-based position within the chapter
    text: str
    pause_after: Pause = Pause.SENTENCE
    # What the voice is asked to say when it differs from ``text`` (pronunciation rules): the part's key and
    # request follow it, subtitles show ``text``.
    spoken: str | None = None

    @property
    def voice_text(self) -> str:
        return self.text if self.spoken is None else self.spoken


@dataclass(frozen=True)
class VoiceSpec:
    """Everything besides the text that changes how a segment sounds. Unset fields are not sent."""

    model: str
    voice: str
    instructions: str | None = None
    speed: float | None = None
    response_format: str | None = None  # None: the server's default (MP3)


@dataclass(frozen=True)
class SpeechResult:
    audio: bytes  # a complete audio file (MP3 unless response_format says otherwise)
    attempts: int = 1  # requests made, retries included
    rate_limited: int = 0  # 429s of the key's rate limit met on the way (not attempts: they are not billed)
    waited_s: float = 0.0  # held back by the rate governor


@dataclass(frozen=True)
class ChapterLoudness:
    """A chapter's loudness after levelling (``assembly.loudness.chapter_loudness``), as its file will measure,
    for the report.

    Levels are the parts' after gain plus the encoder's gain. ``integrated_lufs`` is the parts' loudness
    energy-weighted over their durations (silence is below the absolute gate, so pauses do not count; the
    relative gate is taken per part), an estimate within a few tenths of an LU of ffmpeg's measurement of the
    encoded chapter (tested); where the limiter works hard (``limited`` parts, ``max_limiting_db`` deep) the
    file measures lower: 0.3 LU for eSpeak speech limited by 4 dB, up to ~1 LU for a full-scale plosive on
    every syllable. ``rms_db`` is over the whole chapter, pauses included, as ACX measures it. ``peak_db``
    (sample) and ``true_peak_db`` (None when not measured) are the parts' as the limiter leaves them; the
    file's are within ~0.4 dB (the encoder's 0.95x and its overshoot about cancel), which each target's
    ``codec_margin_db`` leaves room for.
    """

    parts: int
    duration_ms: int
    integrated_lufs: float | None  # None: nothing but silence
    source_lufs: float | None  # the parts before gain (as decoded): how loud the answers were
    rms_db: float
    peak_db: float
    true_peak_db: float | None
    gain_min_db: float
    gain_max_db: float
    limited: int  # parts whose peaks the encoder's limiter takes down
    max_limiting_db: float
    peak_limited: int  # parts the ceiling kept below the target, even with the limiter
    max_shortfall_db: float  # the most any part ended below the target
    estimated: int  # parts too short for a gated measurement
    silent: int
    trimmed_ms: int  # leading and trailing silence removed, all parts together


@dataclass(frozen=True)
class LoudnessTarget:
    """What every part of a book is brought to.

    ``measure`` says what ``level_db`` means: ``"lufs"`` is EBU R128 integrated loudness (K-weighted, gated),
    ``"rms"`` the plain RMS in dBFS. ``ceiling_db`` is the highest peak the decoded chapter MP3 may have; the
    limiter (or without one, the gain) keeps the PCM's peaks at ``ceiling_db - codec_margin_db``, as MP3
    encoding lifts the peaks of speech-like sound by up to ~0.4 dB, its -0.45 dB included (measured: 128 kbps,
    24 kHz). ``true_peak``: the ceiling counts peaks between samples (dBTP), as EBU R128 does, else samples, as
    ACX does. ``max_limiting_db`` is the most the encoder's limiter may take off a part's peaks (0: no
    limiter). ``low_db``..``high_db`` is the range a chapter must land in to comply. ``max_boost_db`` keeps a
    part that is nearly all noise from being blown up.
    """

    name: str
    measure: Literal["lufs", "rms"]
    level_db: float
    ceiling_db: float
    low_db: float
    high_db: float
    true_peak: bool
    max_limiting_db: float = 6.0
    codec_margin_db: float = 0.5
    max_boost_db: float = 24.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_limiting_db <= 24:  # alimiter's input gain goes to 64x (36 dB)
            raise ValueError(f"max_limiting_db must be within 0..24 dB, not {self.max_limiting_db}")
        if not -24 <= self.peak_limit_db <= 0:  # alimiter's limit is 1/16..1
            raise ValueError(f"the peak limit must be within -24..0 dBFS, not {self.peak_limit_db}")

    def accepts(self, chapter: ChapterLoudness) -> bool:
        """Whether a chapter is within this target's range and under its ceiling, as its measure counts."""
        level = chapter.integrated_lufs if self.measure == "lufs" else chapter.rms_db
        peak = chapter.true_peak_db if self.true_peak and chapter.true_peak_db is not None else chapter.peak_db
        return level is not None and self.low_db <= level <= self.high_db and peak <= self.ceiling_db

    @property
    def peak_limit_db(self) -> float:
        """The highest peak a part's PCM may keep once the limiter has done its work."""
        return self.ceiling_db - self.codec_margin_db

    @property
    def measures_true_peak(self) -> bool:
        """Whether parts need their true peak measured (``decode_and_measure(true_peak=...)``): only when the gain
        alone keeps a true-peak ceiling. With a limiter, the limiter holds the ceiling (oversampled), and the
        measurement, a third of the decode lane's CPU, would only shift its allowance by a few tenths of a dB."""
        return self.true_peak and not self.max_limiting_db

    @property
    def headroom_db(self) -> float:
        """How far below its level the PCM travels to the encoder, so peaks the limiter takes back never clip."""
        return self.max_limiting_db

    def encoder_filter(self, rate: int) -> str | None:
        """The ``-af`` filter for the chapter's encoder at ``rate``: the limiter, whose input gain restores the
        headroom in floating point. For a true-peak target it works at twice the rate, or the peaks between
        samples it leaves would pass the ceiling by up to 4 dB (measured on clicks; 4x gains 0.4 dB for three
        times the CPU). Sample-exact: same count, same alignment (``latency`` compensates its lookahead);
        where it does not limit, the samples are the input's times the gain (rounded, or resampled there and
        back). ~0.5 s of CPU per 30 minutes at 24 kHz, ~1.3 s oversampled. None without a limiter."""
        if not self.max_limiting_db:
            return None
        limiter = (f"alimiter=level_in={10 ** (self.headroom_db / 20):.6f}:limit={10 ** (self.peak_limit_db / 20):.6f}"
                   ":attack=5:release=50:level=false:latency=true")  # fmt: skip
        return f"aresample={2 * rate},{limiter},aresample={rate}" if self.true_peak else limiter


# -18 LUFS suits speech on headphones and phones (EBU R128's -23 is for broadcast with its wide dynamics).
EBU = LoudnessTarget("ebu", "lufs", level_db=-18.0, ceiling_db=-1.0, low_db=-19.0, high_db=-17.0, true_peak=True)
# ACX (Audible): RMS -23..-18 dB measured unweighted over the whole file, peaks at or below -3 dBFS.
ACX = LoudnessTarget("acx", "rms", level_db=-20.0, ceiling_db=-3.0, low_db=-23.0, high_db=-18.0, true_peak=False)
TARGETS: dict[str, LoudnessTarget] = {t.name: t for t in (EBU, ACX)}


@dataclass(frozen=True)
class ChapterAudio:
    """A finished chapter file and what is known about it."""

    chapter: Chapter
    path: Path
    duration_ms: int
    loudness: ChapterLoudness | None = None  # with a loudness target: the chapter's levels, as levelled


@dataclass(frozen=True)
class BackendOptions:
    """How to reach a voice (one of the three parts of ``config.Settings``; it lives here because every part
    request carries it). Never holds the key itself, only the name of the variable that does."""

    name: str = field(default="openai", metadata={"key": "backend"})  # see pipeline.tts.registry
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0  # seconds to wait for one answer
    connect_timeout: float = 10.0
    max_retries: int = 4
    # The key's limits, when known: requests and characters per minute. Servers that send OpenAI's
    # x-ratelimit-* headers teach the rest at run time; these only make the first minute smooth.
    rpm: float | None = None
    cpm: float | None = None
    # Seconds of nothing but 429s (not one answer with audio) after which the run stops, naming the key.
    rate_limit_patience: float = 600.0
    price_per_million_chars: float | None = None  # None: the backend's own price list
    # The transcript check (pipeline.transcript, tts.transcribe): the same endpoint's /audio/transcriptions,
    # paced by a governor of its own (the key's transcription limit is not its speech limit).
    transcribe_model: str = "gpt-4o-mini-transcribe"
    transcribe_rpm: float | None = None  # None: learnt from x-ratelimit-* headers, as for speech
    transcribe_price_per_minute: float | None = None  # US dollars a minute of audio; None: the known list
    # The language a backend that follows the book's language adapts to; set by the registry, not by users.
    language: str | None = field(default=None, metadata={"key": None})

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        value = (os.environ if env is None else env).get(self.api_key_env, "").strip()
        return value or None

    def key_id(self, env: Mapping[str, str] | None = None) -> str:
        """Which key this is, without the key: a short hash, the same on every machine that holds it."""
        key = self.api_key(env)
        return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "no-key"


# --- the unit of work: plain values, so any executor (local tasks, a distributed queue) can carry them


@dataclass(frozen=True)
class Remake:
    """A fresh request for a part whose kept copy was judged suspect (``pipeline.verify``): the cached copy is
    not reused, and the new answer replaces it only if it is nearer what the text should take (lower
    ``verify.badness`` against ``expected_voiced_s``) than the copy kept so far."""

    expected_voiced_s: float  # the voiced time the run's estimate expects for this text
    silence_limit_s: float  # the longest silence a clean part holds
    best_badness: float  # of the copy kept so far


@dataclass(frozen=True)
class PartRequest:
    """One distinct part to make: speak ``text`` with ``spec`` through the backend ``backend`` names, and keep
    the answer in the store at ``store`` under ``key``. Carries no secret: a backend names the variable that
    holds its key, and whoever runs the request reads it from its own environment."""

    key: str
    text: str
    spec: VoiceSpec
    backend: BackendOptions
    store: str  # the store's location (a folder or a URL), see pipeline.store
    verify: bool = False  # measure the part where it arrives (``pipeline.verify``), and keep the measure with it
    remake: Remake | None = None  # set: make it afresh even if the store holds it (verification found it suspect)

    @property
    def fmt(self) -> str:
        return self.spec.response_format or "mp3"


class PartStatus(StrEnum):
    STORED = "stored"  # synthesized now and kept
    CACHED = "cached"  # already in the store: nothing was sent
    FAILED = "failed"  # still failing after its retries; the next run tries again
    REFUSED = "refused"  # the server said no retry can help (see ``error_kind``)


class ErrorKind(StrEnum):
    """Why a part was refused, and so what stops: the run (auth, quota, store), or only the book."""

    AUTH = "auth"
    QUOTA = "quota"
    BAD_REQUEST = "bad request"
    REFUSED = "refused"  # any other fatal answer
    STORE = "store"  # the answer could not be kept (disk full, read-only): every later one would be lost too
    RESTING = "resting"  # the key (or server) asks not to be tried for long, or has refused everything for long

    @property
    def stops_run(self) -> bool:
        return self in (ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.STORE, ErrorKind.RESTING)


@dataclass(frozen=True)
class PartMeasure:
    """A part's audio as the timing check sees it (``pipeline.verify``), kept beside the part in the store so it
    is measured once. Voiced: 20 ms frames above max(-45 dBFS, the part's P95 level - 35 dB)."""

    chars: int  # the text's counted characters: non-space (Latin), CJK characters + letters + digits (CJK)
    script: str  # "latin" or "cjk": which estimate the part's rate joins
    duration_s: float
    voiced_s: float
    inner_silence_s: float  # the longest unvoiced run between the first and the last voiced frame
    lead_s: float  # unvoiced before the first voiced frame
    trail_s: float  # unvoiced after the last voiced frame
    size: int = 0  # bytes of the part measured: a measure of another copy is not trusted


@dataclass(frozen=True)
class Verdict:
    """What the timing check (and, with transcripts, the coverage check) made of one part."""

    ok: bool
    reasons: tuple[str, ...]  # "cut short", "runs on", "silence 4.1 s inside", ...: empty when ok
    voiced_s: float
    expected_s: float  # voiced time the book's estimate expects for the text
    low_s: float  # the band voiced time must fall in
    high_s: float
    rate: float  # counted characters per voiced second
    expected_rate: float
    longest_silence_s: float  # inner, lead or trail, whichever is longest
    silence_limit_s: float
    coverage: float | None = None  # the transcript check's share of the text heard, when it ran


@dataclass(frozen=True)
class RateNote:
    """What the rate governor that made a part knew when the answer came: travels back with the result, so a
    run whose requests go out elsewhere (the celery engine's workers) can show and report the key's limit."""

    limit_rpm: float | None = None  # the request limit in force, if any is known
    limit_source: str | None = None  # "config", "headers" or "429"
    throttled: bool = False  # requests were being held back by the limit


@dataclass(frozen=True)
class PartResult:
    key: str
    status: PartStatus
    attempts: int = 0  # requests sent for it, retries included (0 when it was cached)
    characters: int = 0  # characters sent and paid for
    error: str | None = None  # one line, free of the key
    error_kind: ErrorKind | None = None
    rate_limited: int = 0  # 429s of the key's rate limit met on the way
    waited_s: float = 0.0  # held back by the rate governor
    rate: RateNote | None = None  # set by executors whose governors are not the run's (celery workers)
    # What the part's audio holds (``verify.measure``): of the copy in the store, or with ``remake``, of the new
    # try, ``kept`` saying whether it replaced the old one. None when verification is off or nothing was made.
    measure: PartMeasure | None = None
    kept: bool = True

    @property
    def ok(self) -> bool:
        return self.status in (PartStatus.STORED, PartStatus.CACHED)
