"""Frozen dataclasses that travel between stages: reader -> chunker -> synthesizer -> assembler."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


@dataclass(frozen=True)
class Chapter:
    """One chapter in reading order. ``paragraphs`` are normalized: single spaces, no empty ones."""

    index: int  # 1-based position in the book
    title: str
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.paragraphs)


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


@dataclass(frozen=True)
class ChapterAudio:
    """A finished chapter file and what is known about it."""

    chapter: Chapter
    path: Path
    duration_ms: int
    segment_durations_ms: tuple[int, ...] = field(default=())
