"""Which chapters a run makes: ``--chapters 1-3,7,12-`` (and ``chapters = "…"`` in a config or job file), by
the numbers the plan shows (``Chapter.index``, 1-based). Also how long a preview is (``--preview 90s``).

A spec is checked twice: its form when the setting is read (a typo fails before the book is read), its
numbers against the book when it is planned (only then is the book's range known)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipeline.errors import UsageError

PREVIEW_NAME = "preview.mp3"  # what --preview writes in the output folder

_ITEM = re.compile(r"(\d+)(?:\s*(-)\s*(\d+)?)?")
_LENGTH = re.compile(r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s?)?", re.IGNORECASE)


def parse_chapters(spec: str) -> tuple[tuple[int, int | None], ...]:
    """The ranges of a spec, in its order: ``"1-3,7,12-"`` -> ((1, 3), (7, 7), (12, None)). UsageError, one
    line, when it is not a list of numbers and ranges."""
    ranges: list[tuple[int, int | None]] = []
    for item in spec.split(","):
        match = _ITEM.fullmatch(item.strip())
        if match is None:
            raise UsageError(
                f"chapters {spec!r}: {item.strip()!r} is not a chapter number or range; write e.g. 1-3,7,12-"
            )
        first = int(match.group(1))
        last = None if match.group(2) and match.group(3) is None else int(match.group(3) or first)
        if first < 1 or (last is not None and last < first):
            raise UsageError(f"chapters {spec!r}: {item.strip()!r} is not a range of chapters counted from 1")
        ranges.append((first, last))
    return tuple(ranges)


def select_chapters(spec: str, total: int) -> tuple[int, ...]:
    """The chapter numbers ``spec`` names in a book of ``total`` chapters, sorted, each once. A number past the
    book's end is a UsageError naming the book's range (an open range must start inside it)."""
    chosen: set[int] = set()
    for first, last in parse_chapters(spec):
        end = total if last is None else last
        if first > total or end > total:
            have = f"chapters 1-{total}" if total > 1 else "1 chapter" if total == 1 else "no chapters"
            raise UsageError(f"chapters {spec!r}: the book has {have}")
        chosen.update(range(first, end + 1))
    return tuple(sorted(chosen))


def describe_chapters(indices: Iterable[int]) -> str:
    """Chapter numbers as a spec a person reads: (1, 2, 3, 7) -> "1-3, 7"."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_length(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``1.5m``, ``1m30s``; UsageError, one line, otherwise (or not above 0)."""
    match = _LENGTH.fullmatch(text.strip())
    if not text.strip() or match is None or not (match.group(1) or match.group(2)):
        raise UsageError(f"preview length {text!r}: write seconds or minutes, e.g. 60s, 90s or 1m30s")
    seconds = float(match.group(1) or 0) * 60 + float(match.group(2) or 0)
    if not 1 <= seconds <= 3600:
        raise UsageError(f"preview length {text!r}: between 1 second and an hour")
    return seconds
