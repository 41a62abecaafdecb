"""What a book needs: its segments, their part keys, which parts are already kept, and which chapter files an
earlier run left that are still current. Planning reads and looks up; it never sends or writes anything."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.bookmeta import default_narrator, narrator
from pipeline.chunker import chunk_chapter
from pipeline.config import BookOptions, Settings, limits_file
from pipeline.errors import UsageError
from pipeline.lexicon import Lexicon, load_lexicon
from pipeline.limits import recall
from pipeline.models import BackendOptions, Book, Chapter, Pause, Segment
from pipeline.names import chapter_path
from pipeline.report import ChapterOutcome, ChapterStatus, PreviousRun, read_previous
from pipeline.selection import describe_chapters, select_chapters
from pipeline.store import PartStore, part_key
from pipeline.textfacts import is_cjk
from pipeline.titles import spoken_title
from pipeline.tts import registry

log = logging.getLogger("audiobook")


@dataclass(frozen=True)
class ChapterPlan:
    chapter: Chapter
    segments: tuple[Segment, ...]
    keys: tuple[str, ...]  # part key of each segment
    cached: tuple[bool, ...]  # whether each part was already in the store when planned
    fingerprint: str  # everything the chapter file depends on; equal fingerprint means the file is current
    filename: str
    up_to_date: bool  # the file from an earlier run exists with this fingerprint: nothing to do
    previous_duration_s: float | None = None  # that file's length, from the earlier run's report

    @property
    def characters(self) -> int:
        return sum(len(s.voice_text) for s in self.segments)


@dataclass(frozen=True)
class BookPlan:
    book: Book
    options: BookOptions
    backend: BackendOptions  # as adapted to this book (the offline voice follows its language)
    out_dir: Path
    store: str  # the location of the store that holds this book's parts
    identity: str  # the synthesizer identity in every part key
    chapters: tuple[ChapterPlan, ...]
    previous: PreviousRun  # what the last run's report said, read once
    notes: tuple[str, ...] = ()  # what a user should know before paying for the run
    pronunciation: tuple[tuple[str, int], ...] = ()  # each pronunciation rule and the replacements it made
    # --chapters: the chapter numbers chosen (``chapters`` holds only those), None for the whole book; and the
    # files of an earlier run outside the selection that are still current, left in the folder (not deleted:
    # they were paid for and a wider run takes them as they are), named in the plan and the report.
    selection: tuple[int, ...] | None = None
    kept: tuple[ChapterOutcome, ...] = ()
    rate: tuple[float | None, float | None, str | None] = (None, None, None)  # the key's rpm, cpm, and whence

    @property
    def segments(self) -> int:
        return sum(len(c.segments) for c in self.chapters)

    @property
    def characters(self) -> int:
        return sum(c.characters for c in self.chapters)

    @cached_property
    def needed(self) -> dict[str, str]:
        """Part key -> text of every part this run must request (deduplicated)."""
        out: dict[str, str] = {}
        for ch in self.chapters:
            if ch.up_to_date:
                continue
            for seg, key, hit in zip(ch.segments, ch.keys, ch.cached, strict=True):
                if not hit:
                    out.setdefault(key, seg.voice_text)
        return out

    @property
    def characters_to_send(self) -> int:
        return sum(len(t) for t in self.needed.values())

    def cost(self, characters: int) -> float:
        """Estimated US dollars for sending ``characters`` of this book."""
        return registry.backend_for(self.backend).cost(self.backend, self.options.model, characters)

    @property
    def estimated_cost(self) -> float:
        return self.cost(self.characters_to_send)

    @property
    def complete(self) -> bool:
        """Every chapter file is current: the book needs neither a request nor an assembly."""
        return all(c.up_to_date for c in self.chapters)

    def summary(self) -> dict[str, Any]:
        """The plan as data: what --dry-run --json prints and the report starts from."""
        o = self.options
        return {
            "book": {
                "title": self.book.title,
                "author": self.book.author,
                "language": self.book.language,
                "source": str(self.book.source.resolve()) if self.book.source else None,
                # description, site, url, date...: what the feed and other tools show besides the audio
                "info": {k: v for k, v in dataclasses.asdict(self.book.info).items() if v},
            },
            "output": str(self.out_dir),
            "backend": self.backend.name,
            "endpoint": registry.backend_for(self.backend).describe(self.backend),
            "model": o.model,
            "voice": o.voice,
            "max_chars": o.max_chars,
            "chapters": [
                {
                    "index": c.chapter.index,
                    "title": c.chapter.title,
                    "file": c.filename,
                    "segments": len(c.segments),
                    "characters": c.characters,
                    "cached_segments": sum(c.cached),
                    "up_to_date": c.up_to_date,
                }
                for c in self.chapters
            ],
            "skipped": list(self.book.skipped),
            "notes": list(self.notes),
            "pronunciation": [{"rule": rule, "replacements": n} for rule, n in self.pronunciation],
            "segments": self.segments,
            "characters": self.characters,
            "cached_segments": sum(sum(c.cached) for c in self.chapters),
            "requests_needed": len(self.needed),
            "characters_to_send": self.characters_to_send,
            "estimated_cost_usd": round(self.estimated_cost, 4),
            "selection": self._selection(),
            "kept": [c.file for c in self.kept],
            "estimated_minutes": self._minutes(),
            "rate_limit": {"rpm": self.rate[0], "cpm": self.rate[1], "source": self.rate[2]},
            # What verification may add: a fresh request for each suspect part, up to ``retries`` times; on a
            # sound voice none is (0 false alarms on 2,222 real parts), so the estimate above stands.
            "verify": {"mode": o.verify, "retries": o.verify_retries if o.verify != "off" else 0, **self._hearing()},
        }

    def _selection(self) -> dict[str, Any] | None:
        if self.selection is None:
            return None
        return {
            "spec": self.options.chapters,
            "chapters": list(self.selection),
            "described": describe_chapters(self.selection),
            "of": len(self.book.chapters),
        }

    def _minutes(self) -> float | None:
        """The least time the key's known rate limit lets the requests still needed take (requests per minute,
        characters per minute, whichever holds them back more); None when no limit is known."""
        rpm, cpm, _source = self.rate
        if rpm is None and cpm is None:
            return None
        by_requests = len(self.needed) / rpm if rpm else 0.0
        by_characters = self.characters_to_send / cpm if cpm else 0.0
        return round(max(by_requests, by_characters), 2)

    def _hearing(self) -> dict[str, Any]:
        """What the transcript check adds: a transcription of each part sent (parts kept with a transcript cost
        nothing), priced by the minute of audio the text makes."""
        if self.options.verify != "transcribe" or self.backend.name != "openai":
            return {}
        from pipeline.tts.transcribe import expected_minutes, transcription_cost

        cjk = is_cjk("".join(self.needed.values())[:2000])
        minutes = expected_minutes(self.characters_to_send, cjk=cjk, speed=self.options.voice_spec.speed)
        return {
            "transcriptions": len(self.needed),
            "transcription_minutes": round(minutes, 2),
            "transcription_cost_usd": round(transcription_cost(self.backend, minutes), 4),
        }


def chapter_fingerprint(keys: Sequence[str], book: Book, chapter: Chapter, total: int, o: BookOptions) -> str:
    data: dict[str, object] = {
        "keys": list(keys),
        "title": chapter.title,
        "part": chapter.part,
        "track": [chapter.index, total],
        "album": book.title,
        "author": book.author,
        "language": book.language,
        "cover": hashlib.sha256(book.cover).hexdigest() if book.cover else None,
        "audio": [
            o.sample_rate,
            o.bitrate,
            o.sentence_pause_ms,
            o.paragraph_pause_ms,
            o.title_pause_ms,
            o.chapter_pad_ms,
            o.genre,
            o.subtitles,
        ],
    }
    # The book's metadata and narrator are in every chapter's tags: a change retags (reassembles) the chapters.
    data["meta"] = [dataclasses.asdict(book.info), narrator(o)]
    if o.loudness:  # only when set, so chapters made without levelling keep the fingerprints they had
        data["loudness"] = o.loudness
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _check_owner(book: Book, out_dir: Path, previous: PreviousRun) -> None:
    """An output folder belongs to one book: a run of another would take its chapters for stale ones of its own
    and delete them. The same book moved or renamed (same title) is still the same book."""
    if previous.source is None or book.source is None or previous.title == book.title:
        return
    if Path(previous.source).resolve() != book.source.resolve():
        raise UsageError(
            f"output folder {out_dir} holds another book ({previous.title!r}, from {previous.source}); "
            "choose another folder with -o, or empty that one"
        )


def plan_book(book: Book, settings: Settings, out_dir: Path, store: PartStore) -> BookPlan:
    """Chunk the book and look everything up; sends nothing. ``store`` is where its parts are kept."""
    options = settings.book
    if options.narrator is None:  # who reads it, for the tags and library files: this backend's voice
        options = dataclasses.replace(options, narrator=default_narrator(settings.backend.name, options))
    backend = registry.backend_for(settings.backend)
    adapted = backend.adapt(settings.backend, options.language or book.language)
    identity = backend.identity(adapted)
    spec, fmt = options.voice_spec, options.part_format
    pack = options.pack if options.pack is not None else backend.packs
    previous = read_previous(out_dir)
    _check_owner(book, out_dir, previous)
    total = len(book.chapters)
    selected = set(select_chapters(options.chapters, total)) if options.chapters is not None else None
    kept: list[ChapterOutcome] = []
    notes = list(backend.caveats(adapted))
    lexicon = load_lexicon(options.lexicon) if options.lexicon else None
    replaced = [0] * (len(lexicon.rules) if lexicon else 0)
    silent = 0
    chapters = []
    for chapter in book.chapters:
        chosen = selected is None or chapter.index in selected
        # The title is said as a voice should ("Chapter 37", not "CHAPTER XXXVII."); tags keep the book's form.
        said = dataclasses.replace(chapter, title=spoken_title(chapter.title, book.language))
        chunked = chunk_chapter(said, options.max_chars, announce_title=options.announce_titles, pack=pack)
        if lexicon:
            counts = replaced if chosen else [0] * len(replaced)  # the plan counts what this run sends
            chunked = tuple(_pronounce(seg, lexicon, counts) for seg in chunked)
        segments = _speakable(chunked)
        silent += len(chunked) - len(segments) if chosen else 0
        keys = tuple(part_key(identity, spec, seg.voice_text) for seg in segments)
        fingerprint = chapter_fingerprint(keys, book, chapter, total, options)
        filename = chapter_path(book, chapter.index, total, chapter.title, options.output_format)
        before, duration = previous.current.get(filename, (None, None))
        up_to_date = before == fingerprint and (out_dir / filename).is_file()
        if not chosen:
            if up_to_date:  # an earlier, wider run's chapter: left as it is, said in the plan and the report
                kept.append(_kept(chapter, segments, filename, fingerprint, duration))
            continue
        cached = tuple(store.has(k, fmt) for k in keys)
        chapters.append(
            ChapterPlan(
                chapter, segments, keys, cached, fingerprint, filename, up_to_date, duration if up_to_date else None
            )
        )
    if silent:
        notes.append(f"{silent} segment(s) with no letter or digit to speak (symbols, emoji) are not sent")
    pronunciation = (
        tuple((rule.describe(), n) for rule, n in zip(lexicon.rules, replaced, strict=True)) if lexicon else ()
    )
    if kept:
        notes.append(
            f"{len(kept)} chapter file(s) an earlier run made outside --chapters {options.chapters} are kept in "
            f"{out_dir} but left out of the playlist and the M4B (a run without --chapters takes them in, free)"
        )
    for note in notes:
        log.warning("%s: %s", book.title, note)
    return BookPlan(
        book,
        options,
        adapted,
        out_dir,
        store.location,
        identity,
        tuple(chapters),
        previous,
        tuple(notes),
        pronunciation,
        tuple(sorted(selected)) if selected is not None else None,
        tuple(kept),
        _known_rate(adapted, store.location),
    )


def _kept(
    chapter: Chapter, segments: Sequence[Segment], file: str, fingerprint: str, duration: float | None
) -> ChapterOutcome:
    return ChapterOutcome(
        index=chapter.index,
        title=chapter.title,
        file=file,
        status=ChapterStatus.UNCHANGED,
        segments=len(segments),
        characters=sum(len(s.voice_text) for s in segments),
        duration_s=duration,
        fingerprint=fingerprint,
    )


def _known_rate(options: BackendOptions, store: str) -> tuple[float | None, float | None, str | None]:
    """The key's limits as far as they are known before a request: the config's, else what an earlier run read
    in the key's headers (kept beside the parts, by endpoint and key hash). A backend without a price has no
    key to limit it."""
    if registry.backend_for(options).cost(options, "", 1_000_000) == 0:
        return (None, None, None)
    if options.rpm is not None or options.cpm is not None:
        return (options.rpm, options.cpm, "config")
    learned = recall(limits_file([store]), registry.governor_key(options))
    return (learned, None, "headers") if learned is not None else (None, None, None)


def _pronounce(segment: Segment, lexicon: Lexicon, replaced: list[int]) -> Segment:
    """The segment with the pronunciation rules applied to what the voice is asked to say; counts each rule."""
    spoken, counts = lexicon.apply(segment.text)
    for i, n in enumerate(counts):
        replaced[i] += n
    return segment if spoken == segment.text else dataclasses.replace(segment, spoken=spoken)


def _speakable(segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
    """The segments a voice can say: one with no letter or digit (emoji, a row of symbols) would be paid for and
    give silence or noise. Its pause goes to the segment before it when longer (a paragraph's end stays one)."""
    kept: list[Segment] = []
    order = (Pause.SENTENCE, Pause.PARAGRAPH, Pause.TITLE, Pause.END)
    for segment in segments:
        if any(c.isalnum() for c in segment.voice_text):
            kept.append(segment)
        elif kept and order.index(segment.pause_after) > order.index(kept[-1].pause_after):
            kept[-1] = dataclasses.replace(kept[-1], pause_after=segment.pause_after)
    return tuple(kept)
