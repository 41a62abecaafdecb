"""Listening before paying: a preview of a book (about its first minute) and a sample of each voice. Both are
ordinary plans (``planning.BookPlan``) cut down to a few segments, so their parts are made, verified and cached
as any run's are, and a later run pays nothing for them:

- the preview is the first segments of the first real chapter *as the full run chunks it* (a prefix of the
  chapter's plan, not a new chunking of some of its text), so its part keys are the full run's;
- a voice sample is a one-chapter book of one short passage, planned once per voice.

``app.preview`` and ``app.voice_samples`` run them; this module chooses what to say and writes the clips.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline import assembly
from pipeline.chunker import split_sentences
from pipeline.errors import UsageError
from pipeline.models import Book, Chapter
from pipeline.planning import BookPlan, ChapterPlan
from pipeline.store import Stores
from pipeline.verify import PRIOR_RATE, count_chars

# A chapter with less body text than this is not where a listener starts: a title page, a dedication, an
# epigraph, a part's title standing alone (the readers already leave out the front matter they recognise).
REAL_CHAPTER_CHARS = 400
SAMPLE_CHARS = 300  # a voice sample's passage, at most: about 20 seconds, one request
DEFAULT_PASSAGES = {
    "en": "The lantern keeper climbed the stairs as the storm came in from the sea. Every night for forty years "
    "he had lit the lamp, and every night the ships had found their way home.",
    "zh": "守灯人在暴风雨从海上袭来时爬上了楼梯。四十年来，他每晚都点亮那盏灯，每晚船只都找到了回家的路。",
}


def seconds_of(text: str, speed: float | None = None) -> float:
    """About how long a voice takes to say ``text``: the speech-rate prior verification starts from
    (``verify.PRIOR_RATE``: characters a voiced second, by script), before any audio exists."""
    chars, script = count_chars(text)
    return chars / (PRIOR_RATE.get(script, PRIOR_RATE["latin"]) * (speed or 1.0))


def first_real_chapter(plan: BookPlan) -> ChapterPlan:
    """The first planned chapter with a body worth hearing; the longest when none is that long."""
    if not plan.chapters:
        raise UsageError(f"{plan.book.title}: no chapter to preview")
    for cp in plan.chapters:
        if cp.chapter.characters >= REAL_CHAPTER_CHARS:
            return cp
    return max(plan.chapters, key=lambda cp: cp.chapter.characters)


def preview_plan(plan: BookPlan, seconds: float) -> BookPlan:
    """``plan`` cut to the preview: the first segments of its first real chapter whose spoken length comes
    closest to ``seconds`` (one at least). Segments end at sentence ends, so the preview speaks whole sentences."""
    cp = first_real_chapter(plan)
    speed = plan.options.voice_spec.speed
    total, best, best_gap = 0.0, 1, float("inf")
    for n, segment in enumerate(cp.segments, 1):
        total += seconds_of(segment.voice_text, speed)
        if abs(total - seconds) < best_gap:
            best, best_gap = n, abs(total - seconds)
        if total >= seconds:
            break
    cut = dataclasses.replace(
        cp,
        segments=cp.segments[:best],
        keys=cp.keys[:best],
        cached=cp.cached[:best],
        up_to_date=False,
        previous_duration_s=None,
    )
    return dataclasses.replace(plan, chapters=(cut,), kept=())


def passage(book: Book | None, text: str | None, language: str | None, limit: int) -> str:
    """What a voice sample says: ``text`` as given; else the start of ``book``'s first real chapter, whole
    sentences up to ``limit`` characters (one sentence at least, cut if it alone is longer); else a passage of
    our own in the language."""
    if text is not None:
        if not text.strip():
            raise UsageError("--text is empty: give the words the voices should say")
        return " ".join(text.split())
    if book is None:
        primary = (language or "en").split("-")[0].lower()
        return DEFAULT_PASSAGES.get(primary, DEFAULT_PASSAGES["en"])
    chapters = [c for c in book.chapters if c.characters >= REAL_CHAPTER_CHARS] or list(book.chapters)
    if not chapters or not any(c.paragraphs for c in chapters):
        raise UsageError(f"{book.title}: no text to take a sample from; give --text instead")
    words: list[str] = []
    for paragraph in next(c for c in chapters if c.paragraphs).paragraphs:
        for sentence in split_sentences(paragraph):
            if words and len(" ".join([*words, sentence])) > limit:
                return " ".join(words)
            words.append(sentence)
    said = " ".join(words)
    return said if len(said) <= limit else said[:limit].rsplit(" ", 1)[0]


def sample_book(text: str, language: str | None) -> Book:
    """A one-chapter book of ``text``, with no title to announce."""
    return Book("Voice sample", (Chapter(1, "", (text,)),), language=language)


@dataclass(frozen=True)
class Clip:
    """A short file made from a plan's parts: a preview or a voice sample."""

    path: Path
    duration_s: float
    segments: int
    characters: int


def write_clip(plan: BookPlan, stores: Stores, path: Path) -> Clip:
    """Join the (stored) parts of the plan's one chapter into ``path``, as a chapter file is joined (pauses,
    lossless where it can), without subtitles; written beside it and renamed into place."""
    (cp,) = plan.chapters
    store = stores.at(plan.store)
    fmt = plan.options.part_format
    parts = [functools.partial(store.get, key, fmt) for key in cp.keys]
    options = dataclasses.replace(plan.options, subtitles=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".clip-") as work:
        audio = assembly.assemble_chapter(
            plan.book, cp.chapter, cp.segments, parts, Path(work), options, total_chapters=len(plan.book.chapters)
        )
        os.replace(audio.path, path)
    return Clip(path, audio.duration_ms / 1000, len(cp.segments), cp.characters)


def sample_name(voice: str) -> str:
    """A voice's sample file: its name kept to letters, digits, ``-``, ``_`` and ``.`` (voices are free
    strings; a relay's may hold ``/``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in voice).strip("._") or "voice"
    return f"{safe}.mp3"


def voices_to_sample(given: Sequence[str] | None, defaults: Sequence[str]) -> tuple[str, ...]:
    voices = tuple(dict.fromkeys(v.strip() for v in (given or defaults) if v.strip()))
    if not voices:
        raise UsageError("--voices names no voice; write e.g. --voices alloy,nova")
    return voices
