"""The run report: what each book's run did, kept as ``report.json`` in its output folder, and read back by
the next run (which chapters are current, what it wrote). Also how plans and reports read on a terminal.

This module is the only reader and writer of ``report.json``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pipeline import wire
from pipeline.files import atomic_write
from pipeline.models import TARGETS, ChapterLoudness, LoudnessTarget

REPORT_NAME = "report.json"


class ChapterStatus(StrEnum):
    DONE = "done"  # written by this run
    UNCHANGED = "unchanged"  # written by an earlier run from the same parts and tags: left as it was
    FAILED = "failed"
    NOT_STARTED = "not started"

    @property
    def complete(self) -> bool:
        return self in (ChapterStatus.DONE, ChapterStatus.UNCHANGED)


class BookStatus(StrEnum):
    DONE = "done"
    # Every chapter written, but verification left parts suspect after their fresh tries (named in the report):
    # never "done". The run exits 3 (``errors.Unverified``).
    UNVERIFIED = "unverified"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    RUNNING = "running"  # written as each chapter is finished; a report left so means the run was killed


@dataclass(frozen=True)
class SegmentFailure:
    chapter: int
    chapter_title: str
    segment: int
    text: str  # the first words, so a person can find it
    error: str


@dataclass(frozen=True)
class SuspectPart:
    """A part still suspect after its fresh tries (``pipeline.verify``): where it is, what it says, what was
    wrong with the best try kept, and the figures that said so."""

    chapter: int
    chapter_title: str
    segment: int
    text: str  # the first words, so a person can find it
    reasons: tuple[str, ...]
    voiced_s: float
    expected_s: float
    low_s: float
    high_s: float
    longest_silence_s: float
    silence_limit_s: float
    tries: int  # requests made for it in this run, the first included


@dataclass(frozen=True)
class VerifyFigures:
    """A book's verification: the mode, and the parts it checked, made again and left suspect."""

    mode: str  # "timing" or "transcribe"
    verified: int  # parts judged (made now or cached), whatever the outcome
    remade: int  # fresh requests sent for suspect parts
    suspect: int  # parts left suspect: unverified, named in ``suspects``
    suspects: tuple[SuspectPart, ...] = ()
    transcriptions: int = 0  # with transcripts: requests sent to hear parts (transcripts kept earlier are free)
    transcription_cost_usd: float = 0.0  # their estimated cost (priced by the minute of audio)


@dataclass(frozen=True)
class LoudnessFigures:
    """A levelled chapter's loudness, as its report entry gives it. Levels are those of the levelled parts plus
    the encoder's gain, energy-weighted (``assembly.loudness.chapter_loudness``): within a few tenths of what ffmpeg
    measures on the file, a little under it where the limiter worked hard."""

    target: str  # "ebu" or "acx" (models.TARGETS)
    integrated_lufs: float | None  # EBU R128 integrated loudness; None: nothing but silence
    rms_db: float  # over the whole chapter, pauses included, as ACX measures it
    peak_db: float  # sample peak, dBFS
    true_peak_db: float | None  # dBTP, when measured (only without the limiter, which holds a true-peak ceiling)
    complies: bool  # within the target's range and under its ceiling
    parts: int
    limited: int  # parts whose peaks the encoder's limiter took down
    short: int  # parts the ceiling kept below the target, even with the limiter
    source_lufs: float | None = None  # the parts as the voice answered them, before levelling
    trimmed_ms: int = 0  # silence trimmed from the parts' edges, all parts together

    @classmethod
    def of(cls, summary: ChapterLoudness, target: LoudnessTarget) -> LoudnessFigures:
        return cls(
            target=target.name,
            integrated_lufs=summary.integrated_lufs,
            rms_db=summary.rms_db,
            peak_db=summary.peak_db,
            true_peak_db=summary.true_peak_db,
            complies=target.accepts(summary),
            parts=summary.parts,
            limited=summary.limited,
            short=summary.peak_limited,
            source_lufs=summary.source_lufs,
            trimmed_ms=summary.trimmed_ms,
        )


@dataclass(frozen=True)
class ChapterOutcome:
    index: int
    title: str
    file: str
    status: ChapterStatus
    segments: int
    characters: int
    duration_s: float | None
    fingerprint: str | None
    error: str | None = None
    loudness: LoudnessFigures | None = None  # with a loudness target, for a complete chapter
    verified: int = 0  # its parts judged by verification in this run
    remade: int = 0  # fresh requests for its suspect parts
    suspect: int = 0  # its parts left suspect (unverified)
    coverage_min: float | None = None  # with transcripts: the lowest share of a part's text heard
    coverage_mean: float | None = None


@dataclass(frozen=True)
class RateFigures:
    """How the key's rate limit shaped this book's requests."""

    requests_per_minute: float  # this book's requests over the time they took (first to last answer)
    rate_limited: int  # 429s of the rate limit its requests met: waited out, never a failed attempt
    waited_s: float  # its requests' time held back by the governor, summed over requests
    limit_rpm: float | None = None  # the endpoint's limit as known at the end of the run, if any
    limit_source: str | None = None  # where that came from: "config", "headers" or "429" (learned)


@dataclass(frozen=True)
class BookReport:
    status: BookStatus
    plan: dict[str, Any]
    chapters: tuple[ChapterOutcome, ...]
    requests: int
    retries: int
    cache_hits: int
    synthesized: int
    characters_sent: int
    failures: tuple[SegmentFailure, ...]
    duration_s: float
    elapsed_s: float
    estimated_cost_usd: float
    started: str
    finished: str
    playlist: str | None = None
    m4b: str | None = None
    m4b_fingerprint: str | None = None
    book_files: tuple[str, ...] = ()  # written beside the audio for libraries: cover.jpg, metadata.json, ...
    error: str | None = None
    rate: RateFigures | None = None
    rerun_helps: bool = True  # whether the same command can finish what is missing (else something must change)
    leftovers: tuple[str, ...] = ()  # while running: an earlier run's chapter files still to tidy at the end
    verification: VerifyFigures | None = None  # None: verification off
    # --chapters: an earlier run's chapter files outside this run's selection, still current, left in the folder
    # (not in the playlist or the M4B); kept here so the next run knows them as it knows ``chapters``.
    kept: tuple[ChapterOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def problem(self) -> str | None:
        """One line on what was not done, or None when everything was."""
        if self.status == BookStatus.DONE:
            return None
        if self.status == BookStatus.UNVERIFIED and self.verification is not None:
            parts = self.verification.suspects
            more = f" (and {len(parts) - 1} more)" if len(parts) > 1 else ""
            return (
                f"chapter {parts[0].chapter} ({parts[0].chapter_title}) segment {parts[0].segment} unverified: "
                f"{', '.join(parts[0].reasons)}{more}"
            )
        if self.error:
            return self.error
        if self.failures:
            f = self.failures[0]
            more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            return f"chapter {f.chapter} ({f.chapter_title}) segment {f.segment} failed: {f.error}{more}"
        broken = [c for c in self.chapters if not c.status.complete]
        first = broken[0] if broken else None
        if first is not None and first.error:
            return f"chapter {first.index} ({first.title}) not written: {first.error}"
        return f"{len(broken)} chapter(s) not finished"


@dataclass(frozen=True)
class PreviousRun:
    """What an earlier run's report says about the output folder."""

    current: dict[str, tuple[str | None, float | None]]  # finished chapter file -> (fingerprint, duration s)
    files: frozenset[str]  # every chapter file it listed, finished or not
    playlist: str | None = None
    m4b: str | None = None
    m4b_fingerprint: str | None = None
    title: str | None = None  # the book the folder holds
    source: str | None = None  # and the file it was read from
    loudness: dict[str, LoudnessFigures] = field(default_factory=dict)  # finished chapter file -> its loudness


def read_previous(out_dir: Path) -> PreviousRun:
    """The earlier run's report, or an empty one when there is none (or it cannot be read: then nothing is
    taken as current, which costs an assembly, never a wrong file)."""
    try:
        data = json.loads((out_dir / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        return PreviousRun({}, frozenset())
    chapters = [c for key in ("chapters", "kept") for c in data.get(key, None) or [] if isinstance(c, dict)]

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    book = data.get("plan", {}).get("book", {}) if isinstance(data.get("plan"), dict) else {}
    book = book if isinstance(book, dict) else {}
    finished = [
        c
        for c in chapters
        if isinstance(c.get("file"), str) and c.get("status") in (ChapterStatus.DONE, ChapterStatus.UNCHANGED)
    ]
    levels = {c["file"]: figures for c in finished if (figures := _loudness(c.get("loudness"))) is not None}
    return PreviousRun(
        current={c["file"]: (text(c.get("fingerprint")), number(c.get("duration_s"))) for c in finished},
        files=frozenset(
            [c["file"] for c in chapters if isinstance(c.get("file"), str)]
            + [f for f in data.get("leftovers", []) if isinstance(f, str)]
        ),
        playlist=text(data.get("playlist")),
        m4b=text(data.get("m4b")),
        m4b_fingerprint=text(data.get("m4b_fingerprint")),
        title=text(book.get("title")),
        source=text(book.get("source")),
        loudness=levels,
    )


def _loudness(value: Any) -> LoudnessFigures | None:
    """A chapter entry's loudness as an earlier run wrote it; None when absent (a report from before levelling,
    or a chapter made without it) or not readable."""
    if not isinstance(value, dict) or value.get("target") not in TARGETS:
        return None
    try:
        return wire.decode(LoudnessFigures, value)
    except (KeyError, TypeError, ValueError):
        return None


def read_written(out_dir: Path) -> dict[str, Any] | None:
    """A book folder's report as its run wrote it, for tools that list finished books (the podcast feed); None
    when there is none or it is not a JSON object. A report over 64 MB is no report this program wrote."""
    path = out_dir / REPORT_NAME
    try:
        if path.stat().st_size > 64 * 1024 * 1024:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_report(out_dir: Path, report: BookReport) -> Path:
    return atomic_write(out_dir / REPORT_NAME, json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n")


# --------------------------------------------------------------------------------------------- on a terminal


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _fit(text: str, width: int) -> str:
    """Pad or cut to a terminal width; CJK characters take two columns."""
    if _columns(text) > width:
        while _columns(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _columns(text))


def format_plan(summary: dict[str, Any]) -> str:
    """A plan (``BookPlan.summary()``) as a table for people."""
    b = summary["book"]
    lines = [
        f"Book:     {b['title']}" + (f" — {b['author']}" if b.get("author") else "") + f" [{b.get('language') or '?'}]",
        f"Source:   {b['source']}",
        f"Output:   {summary['output']}",
        f"Speech:   {summary['backend']} {summary['endpoint']}, model {summary['model']}, voice {summary['voice']}",
        "",
        f"{'#':>3}  {'chapter':<44} {'segments':>8} {'chars':>8} {'cached':>7}",
    ]
    for c in summary["chapters"]:
        cached = "current" if c["up_to_date"] else f"{c['cached_segments']}"
        lines.append(f"{c['index']:>3}  {_fit(c['title'], 44)} {c['segments']:>8} {c['characters']:>8,} {cached:>7}")
    if summary["skipped"]:
        lines += ["", "Skipped (not read aloud; --include-matter reads them):"]
        lines += [f"  - {s}" for s in summary["skipped"]]
    if summary.get("pronunciation"):
        lines += ["", "Pronunciation rules (replacements made):"]
        lines += [f"  {r['replacements']:>6,}  {r['rule']}" for r in summary["pronunciation"]]
    if summary.get("notes"):
        lines += ["", "Note:"] + [f"  - {s}" for s in summary["notes"]]
    if summary.get("kept"):
        lines += ["", "Kept from an earlier run (outside the selection, not in the playlist):"]
        lines += [f"  - {name}" for name in summary["kept"]]
    lines.append("")
    if (chosen := summary.get("selection")) is not None:
        lines.append(f"Selected: chapters {chosen['described']} ({len(chosen['chapters'])} of {chosen['of']})")
    lines += [
        f"Total:    {len(summary['chapters'])} chapter{'' if len(summary['chapters']) == 1 else 's'}, "
        f"{summary['segments']} segments, "
        f"{summary['characters']:,} characters; {summary['cached_segments']} segments cached",
        f"To send:  {summary['requests_needed']} requests, {summary['characters_to_send']:,} characters, "
        f"estimated cost ${summary['estimated_cost_usd']:.2f}",
    ]
    if (time_line := _time_line(summary)) is not None:
        lines.append(time_line)
    if (v := summary.get("verify")) is not None:
        if v["mode"] == "off":
            lines.append("Verify:   off (answers are trusted as they come)")
        else:
            lines.append(
                f"Verify:   {v['mode']}: each part's timing checked against its text; a suspect part is asked for "
                f"again up to {v['retries']} times (at most {v['retries']} more requests a suspect part; "
                "expected none)"
            )
            if "transcriptions" in v:
                lines.append(
                    f"          and heard: {v['transcriptions']} transcription requests (one a part), about "
                    f"{v['transcription_minutes']:.1f} min of audio, estimated cost "
                    f"${v['transcription_cost_usd']:.2f} (beside the speech's ${summary['estimated_cost_usd']:.2f})"
                )
    return "\n".join(lines)


def _time_line(summary: dict[str, Any]) -> str | None:
    """How long the key's known rate limit makes the requests take, at the least; None when there is nothing
    to pace (an offline voice) or nothing to send."""
    limit = summary.get("rate_limit") or {}
    minutes = summary.get("estimated_minutes")
    if not summary.get("requests_needed") or summary.get("estimated_cost_usd", 0) == 0:
        return None
    if minutes is None:
        return "Time:     the key's rate limit is not known yet (set rpm in the config, or run once: it is learned)"
    pace = [f"{limit[k]:g} {unit}/min" for k, unit in (("rpm", "requests"), ("cpm", "characters")) if limit.get(k)]
    where = "the config" if limit.get("source") == "config" else "the key's headers, last run"
    return f"Time:     at least {clock(minutes * 60)} at the key's limit of {' and '.join(pace)} (from {where})"


def format_report(report: BookReport, out_dir: Path) -> str:
    """What a finished run wrote, a line a file, and one line of totals."""
    done = [c for c in report.chapters if c.status.complete]
    lines = [f"{c.file}  {clock(c.duration_s or 0)}" for c in done]
    lines += [name for name in (report.playlist, report.m4b) if name]
    if (chosen := report.plan.get("selection")) is not None:
        lines.append(f"selected: chapters {chosen['described']} of {chosen['of']}")
    if report.kept:
        kept = ", ".join(c.file for c in report.kept)
        lines.append(f"kept from an earlier run, outside the selection (not in the playlist): {kept}")
    lines.append(
        f"{len(done)}/{len(report.chapters)} chapters, {clock(report.duration_s)} of audio in {out_dir}/ — "
        f"{report.requests} requests, {report.retries} retries, {report.cache_hits} cached parts; "
        f"report: {out_dir / REPORT_NAME}"
    )
    lines += format_loudness(report.chapters)
    heard = [c for c in report.chapters if c.coverage_min is not None]
    lines += [f"{c.file}  transcript coverage min {c.coverage_min:.0%}, mean {c.coverage_mean or 0:.0%}" for c in heard]
    lines += format_verification(report.verification)
    return "\n".join(lines)


def format_verification(v: VerifyFigures | None) -> list[str]:
    """The verification totals, each part left suspect (its chapter, text, what was wrong and the figures), and
    last, when any is, how many parts are unverified."""
    if v is None:
        return []
    lines = [f"verify ({v.mode}): {v.verified} parts checked, {v.remade} made again, {v.suspect} suspect"]
    if v.mode == "transcribe":
        lines[0] += f"; {v.transcriptions} transcription requests, ${v.transcription_cost_usd:.4f}"
    for p in v.suspects:
        lines.append(
            f'  suspect: chapter {p.chapter} ({p.chapter_title}) segment {p.segment} "{p.text}": '
            f"{', '.join(p.reasons)} (voiced {p.voiced_s:.1f} s, expected {p.expected_s:.1f} s "
            f"[{p.low_s:.1f}..{p.high_s:.1f}], longest silence {p.longest_silence_s:.1f} s, "
            f"{p.tries} tries)"
        )
    if v.suspect:
        lines.append(f"{v.suspect} part{'' if v.suspect == 1 else 's'} unverified")
    return lines


def _span(values: list[float], unit: str) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f} {unit}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}..{high:.1f} {unit}"


def format_loudness(chapters: Sequence[ChapterOutcome]) -> list[str]:
    """A line for the complete chapters levelled to a target (one target a book): their levels, the highest
    peak, and whether all are within the target's range, else which are not; parts limited or short."""
    lines = []
    for name, target in TARGETS.items():
        mine = [(c.index, f) for c in chapters if c.status.complete and (f := c.loudness) and f.target == name]
        if not mine:
            continue
        lufs = target.measure == "lufs"
        unit = "LUFS" if lufs else "dB RMS"
        levels = [v for _, f in mine if (v := f.integrated_lufs if lufs else f.rms_db) is not None]
        true_peaks = [f.true_peak_db for _, f in mine if f.true_peak_db is not None]
        if target.true_peak and true_peaks:
            peak = f"{max(true_peaks):.1f} dBTP"
        else:  # with the limiter only sample peaks are measured: it holds the true-peak ceiling (oversampled)
            peak = f"{max(f.peak_db for _, f in mine):.1f} dBFS"
        rule = f"{name}'s range ({target.low_db:g}..{target.high_db:g} {unit}, peaks to {target.ceiling_db:g} dB)"
        outside = [(index, f) for index, f in mine if not f.complies]
        if outside:
            named = ", ".join(f"{index} ({_level_text(f, lufs)})" for index, f in outside[:5])
            more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
            verdict = f"outside {rule}: chapter {named}{more}"
        else:
            verdict = f"all within {rule}"
        limited, short = sum(f.limited for _, f in mine), sum(f.short for _, f in mine)
        extras = ([f"{limited} parts limited"] if limited else []) + ([f"{short} short of the target"] if short else [])
        lines.append(
            f"loudness: {len(mine)} chapter{'' if len(mine) == 1 else 's'} at "
            f"{_span(levels, unit) if levels else 'silence'}, peak {peak}; {verdict}"
            + ("; " + ", ".join(extras) if extras else "")
        )
    return lines


def _level_text(figures: LoudnessFigures, lufs: bool) -> str:
    level = figures.integrated_lufs if lufs else figures.rms_db
    peak = figures.true_peak_db if figures.true_peak_db is not None else figures.peak_db
    return ("silent" if level is None else f"{level:.1f} {'LUFS' if lufs else 'dB RMS'}") + f", peak {peak:.1f}"
