"""Text -> segments: whole sentences packed into pieces of at most ``max_chars`` characters.

``chunk_text`` packs one paragraph greedily; ``chunk_chapter`` packs a chapter across its paragraphs (with
``pack=False``, paragraph by paragraph, as chunk_text does). Everything works on character offsets, so a piece is
always an exact, stripped substring and the gaps between pieces are whitespace only: nothing is lost, doubled or
reordered. Inside a packed segment a paragraph break is "\\n", and no other line break occurs.

Why not greedy across paragraphs. Against a rate-limited key wall time is requests / rate, so a chapter should
cost close to ⌈characters / max_chars⌉ requests. Greedy packing needs the fewest requests whole sentences allow,
but each cut depends on the one before it: a sentence inserted near a chapter's start moves every later cut, and
the part cache (keyed by segment text) pays for the rest of the chapter again. So the cuts are chosen by content:

1. Units are sentences (a sentence over max_chars: its pieces, cut at clause marks, spaces, anywhere).
2. Anchors are hard cuts. The boundary after a unit is a candidate when a crc32 key of the unit (its first and
   last 10 characters, so most word edits leave it alone) falls below length / spacing: one candidate every
   ``anchor_spacing`` x max_chars characters on average, decided by that unit alone, wherever it sits. A candidate
   closer than ``min_anchor_gap`` to the previous candidate is dropped (short regions waste requests); a region
   longer than ``max_region`` is split at its strongest inner boundary.
3. Each region between anchors gets the fewest segments it can have: cuts run greedily forward from its first
   anchor and backward from the next, meeting at the pivot (the strongest boundary in the middle half of the
   region), whose segment takes the region's slack. An edit moves cuts only between itself and the pivot, and
   often fewer (the moved cuts fall back onto old ones); the other regions keep their segments.
4. Neighbours that fit in one request across an anchor are merged (only a short last region leaves them).

The balance. A region's segments are one request too many half the time (its slack), so sparse anchors save
requests; but an edit can move more cuts in a long region, and the rare edit that makes an anchor or a split
appear or vanish (a candidate sentence inserted, deleted or edited at its ends: about 7% of edits) re-packs one
or two whole regions. That is the whole tail: about 2% of edits change more than 6 segments. Measured by
``bench/chunk_locality.py`` at max_chars 500 (requests / ideal; new segments per edited paragraph, mean/max;
every Alice paragraph, 40 a chapter of the synthetic books, three edits each):

    packing (spacing/gap/max region)   Alice   dialogue  Chinese   Alice edits   dialogue   Chinese
    default (6/2.4/9)                  1.236   1.124     1.103     1.84/15       1.88/12    1.98/13
    denser (5/2.0/8)                   1.243   1.145     1.115     1.82/14       1.83/9     1.82/10
    sparser (8/3.0/10)                 1.240   1.103     1.086     2.02/16       2.14/11    2.13/14
    no max region (6/2.4/-)            1.215   1.091     1.075     1.93/14       2.35/18    2.36/13
    one region a chapter (fewest)      1.198   1.054     1.046     2.25/17       3.60/20    2.79/13
    one paragraph at a time            2.944   9.091     6.897

The default keeps the synthetic books clear of 1.15 with the mean near its floor (a word edit: 1.2); denser
anchors trim the tail a little and cost requests. At max_chars 1000 the default gives 1.128 / 1.089 / 1.078 and
1.72/12 on Alice; at 4096 every chapter is a few requests (1.024 on Alice, at most 3 segments per edit).
Alice's sentences are long (one in ten is over 200 characters): whole sentences cannot take it under 1.198 at
500 characters; only cuts at clause marks could. Packing runs at about 18M characters a second on Alice (per
paragraph: about 23M).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
import zlib
from dataclasses import dataclass

from pipeline.errors import UsageError
from pipeline.models import Book, Chapter, Pause, Segment
from pipeline.textfacts import CJK_CHAR

# A run of sentence-final marks, then any closing quotes or brackets that belong to the same sentence.
_CLOSERS = "\"'”’»)]}」』》）〕】〉"
_CANDIDATE = re.compile(f"[.!?…。！？．‼⁇⁈⁉]+[{re.escape(_CLOSERS)}]*")
_CJK_ENDS = frozenset("。！？．")
_NEXT_VISIBLE = re.compile(r"\s*(\S)")
_WORD_BEFORE = re.compile(r"(\S+)$")
_OPENERS = "\"'“‘«([{「『《（〔【〈"

# Lower-cased, without the final dot. "etc." is listed as the brief asks, though it can end a sentence too.
# fmt: off
ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "mme", "mlle", "messrs", "dr", "st", "prof", "sr", "jr", "rev", "hon", "gen",
    "col", "capt", "lt", "sgt", "cmdr", "gov", "pres", "fr", "e.g", "i.e", "etc", "vs", "viz", "cf",
    "approx", "dept", "jan", "feb", "apr", "jun", "jul", "aug", "sept", "oct", "nov", "mt", "ave",
    "blvd", "inc", "ltd", "corp",
))
# fmt: on
# Also ordinary words ("I said no."), so only abbreviations when a number follows: "No. 5", "p. 12".
BEFORE_NUMBER = frozenset(("no", "nos", "vol", "vols", "p", "pp", "ch", "chap", "fig", "art", "sec"))

_CLAUSE_MARKS = frozenset(";:,；：，、")
_LATIN_CLAUSE_MARKS = frozenset(";:,")


def _is_sentence_end(text: str, start: int, end: int) -> bool:
    """Whether the marks text[start:end] (as matched by _CANDIDATE) end a sentence."""
    n = len(text)
    marks = text[start:end].rstrip(_CLOSERS)
    closed = len(marks) < end - start
    if any(c in _CJK_ENDS for c in marks):
        return True
    if end >= n:
        return True
    following = text[end]
    if not following.isspace():
        if CJK_CHAR.match(following):
            # "想了想……然后" continues; "……”然后" and "OK.然后" end.
            return closed or not all(c == "…" for c in marks)
        return False  # 3.14, e.g, example.com, "Hi!"—dashes
    visible = _NEXT_VISIBLE.match(text, end)
    if visible is None:
        return True  # only whitespace left
    nxt = visible.group(1)
    if nxt.islower():
        return False  # '"Hello!" he said', '... and then', 'e.g. this'
    if marks == "." and not closed:
        word = _WORD_BEFORE.search(text, max(0, start - 24), start)
        if word:
            token = word.group(1).lstrip(_OPENERS)
            if len(token) == 1 and token.isupper():
                return False  # an initial: J. R. R. Tolkien
            if token.lower() in ABBREVIATIONS or (token.lower() in BEFORE_NUMBER and nxt.isdigit()):
                return False
    return True


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence, whitespace excluded from both ends."""
    spans: list[tuple[int, int]] = []
    cut = 0
    for match in _CANDIDATE.finditer(text):
        if _is_sentence_end(text, match.start(), match.end()):
            _add_stripped(text, cut, match.end(), spans)
            cut = match.end()
    _add_stripped(text, cut, len(text), spans)
    return spans


def _add_stripped(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of ``paragraph``, stripped, in order. Closing quotes stay with their sentence."""
    return [paragraph[s:e] for s, e in _sentence_spans(paragraph)]


def _joins_previous(char: str) -> bool:
    """Characters that must not start a piece: combining marks, joiners, variation selectors, surrogates."""
    return (
        unicodedata.combining(char) != 0
        or unicodedata.category(char) in ("Mn", "Mc", "Me")
        or char in "\u200d\u200c"
        or "\ufe00" <= char <= "\ufe0f"
        or "\udc00" <= char <= "\udfff"
    )


def _cut_point(text: str, start: int, limit: int) -> int:
    """Where to end a piece that starts at ``start`` and may reach at most ``limit`` (exclusive).
    Prefers a clause mark in the second half, then the last space, then any clause mark, then a hard cut."""
    clause = space = 0
    if limit < len(text) and text[limit].isspace():
        space = limit  # the piece can take exactly max_chars
    for i in range(limit - 1, start, -1):
        char = text[i]
        if not space and char.isspace():
            space = i
        if not clause and char in _CLAUSE_MARKS:
            after = text[i + 1] if i + 1 < len(text) else " "
            # "3,000" and "10:30" are not clauses; a Latin mark needs a space (or CJK) after it.
            if char not in _LATIN_CLAUSE_MARKS or after.isspace() or CJK_CHAR.match(after):
                clause = i + 1
        if clause and space:
            break
    if clause and (clause - start) * 2 >= limit - start:
        return clause
    if space:
        return space
    if clause:
        return clause
    cut = limit
    while cut > start + 1 and (_joins_previous(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    return cut


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Pieces of one over-long sentence text[start:end] (stripped at both ends)."""
    pieces: list[tuple[int, int]] = []
    while end - start > max_chars:
        cut = _cut_point(text, start, start + max_chars)
        piece_end = cut
        while text[piece_end - 1].isspace():
            piece_end -= 1
        pieces.append((start, piece_end))
        start = cut
        while text[start].isspace():
            start += 1
    pieces.append((start, end))
    return pieces


def chunk_text(paragraph: str, max_chars: int) -> list[str]:
    """Pack whole sentences greedily into stripped pieces of 1..max_chars characters. A sentence longer than
    max_chars is split at clause marks, then whitespace, then anywhere. Pieces are exact substrings of
    ``paragraph``, in order, separated only by whitespace."""
    if max_chars < 1:
        raise UsageError(f"max_chars must be at least 1, got {max_chars}; set a positive segment size")
    pieces: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for start, end in _sentence_spans(paragraph):
        if current is not None and end - current[0] <= max_chars:
            current = (current[0], end)
            continue
        if current is not None:
            pieces.append(current)
        if end - start <= max_chars:
            current = (start, end)
        else:
            *whole, current = _split_long(paragraph, start, end, max_chars)
            pieces.extend(whole)
    if current is not None:
        pieces.append(current)
    return [paragraph[s:e] for s, e in pieces]


# --------------------------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class Packing:
    """Where packed segments may break, in multiples of ``max_chars``. The defaults are the measured balance
    between requests and edit locality (see the module docstring); the other values are for measurements."""

    anchor_spacing: float = 6.0  # mean distance between anchor candidates
    min_anchor_gap: float = 2.4  # a candidate this close to the previous candidate is not an anchor
    max_region: float = 9.0  # a longer region is split at its strongest inner boundary
    pivot_zone: float = 0.5  # the pivot is the strongest boundary in this middle part of its region


DEFAULT_PACKING = Packing()

# Every character that str.splitlines() breaks on: inside a paragraph they become spaces, so that "\n" in a
# packed segment always means a paragraph break (the assembler times subtitle cues by it).
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_KEY_CHARS = 10  # a unit's key hashes its first and last characters, so most word edits leave it alone
_UNIT = 1 << 32


def _fold_line_breaks(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


@dataclass(frozen=True)
class _Units:
    """A chapter cut into units (sentences; pieces of a sentence longer than max_chars), as offsets into
    ``text``: the chapter's paragraphs, line breaks folded and stripped, joined by "\\n"."""

    text: str
    starts: list[int]
    ends: list[int]
    paragraph_ends: list[bool]  # the unit is its paragraph's last
    keys: list[int]  # crc32 of the unit's first and last characters: stable, unlike hash()


def _units(paragraphs: tuple[str, ...], max_chars: int) -> _Units:
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    paragraph_ends: list[bool] = []
    offset = 0
    for paragraph in paragraphs:
        folded = _fold_line_breaks(paragraph)
        spans = _sentence_spans(folded)
        if not spans:
            continue
        if parts:
            offset += 1  # the "\n" before this paragraph
        base = offset - spans[0][0]
        for start, end in spans:
            for s, e in [(start, end)] if end - start <= max_chars else _split_long(folded, start, end, max_chars):
                starts.append(base + s)
                ends.append(base + e)
                paragraph_ends.append(False)
        paragraph_ends[-1] = True
        parts.append(folded[spans[0][0] : spans[-1][1]])
        offset += len(parts[-1])
    text = "\n".join(parts)
    keys = []
    for s, e in zip(starts, ends, strict=True):
        piece = text[s:e] if e - s <= 2 * _KEY_CHARS else text[s : s + _KEY_CHARS] + text[e - _KEY_CHARS : e]
        keys.append(zlib.crc32(piece.encode("utf-8", "surrogatepass")))
    return _Units(text, starts, ends, paragraph_ends, keys)


def _anchors(units: _Units, max_chars: int, packing: Packing) -> list[int]:
    """Unit indexes that start a region: the boundary before unit b is a candidate with probability
    (length of unit b-1) / spacing, decided by that unit's key alone; a candidate closer than the minimum gap
    to the previous candidate is dropped (it depends on that pair only, so nothing cascades)."""
    starts, ends, keys = units.starts, units.ends, units.keys
    scale = _UNIT / (packing.anchor_spacing * max_chars)
    gap = packing.min_anchor_gap * max_chars
    anchors = [0]
    previous = 0
    for b in range(1, len(starts)):
        if (keys[b - 1] * 0x9E3779B1) & 0xFFFFFFFF < (ends[b - 1] - starts[b - 1] + 1) * scale:
            if starts[b] - previous >= gap:
                anchors.append(b)
            previous = starts[b]
    return anchors


def _strongest(units: _Units, a: int, z: int, lo: float, hi: float, salt: int) -> int:
    """The inner boundary of [a, z) starting a unit between ``lo`` and ``hi`` (any, if none does) whose key,
    mixed with ``salt``, is highest. Ties (repeated sentences) go to the one nearest the middle, so a run of
    identical sentences still splits in halves."""
    starts, keys = units.starts, units.keys
    inner = [b for b in range(a + 1, z) if lo <= starts[b] <= hi] or list(range(a + 1, z))
    middle = (lo + hi) / 2
    return max(inner, key=lambda b: ((keys[b - 1] * salt) & 0xFFFFFFFF, -abs(starts[b] - middle), b))


def _split_region(units: _Units, a: int, z: int, max_chars: int, packing: Packing, out: list[int]) -> None:
    """Append the starts of [a, z) split, while longer than max_region, at the strongest inner boundary that
    leaves half the minimum gap on both sides."""
    starts, ends = units.starts, units.ends
    limit = packing.max_region * max_chars
    margin = packing.min_anchor_gap * max_chars / 2
    stack = [(a, z)]
    while stack:
        a, z = stack.pop()
        if ends[z - 1] - starts[a] <= limit or z - a < 2:
            out.append(a)
            continue
        lo, hi = starts[a] + margin, ends[z - 1] - margin
        m = _strongest(units, a, z, lo, hi, 0x85EBCA6B)
        stack.append((m, z))
        stack.append((a, m))


def _pack_region(units: _Units, a: int, z: int, max_chars: int, zone: float, out: list[int]) -> None:
    """Append the segment starts for units [a, z): the fewest segments, cut greedily forward from ``a`` up to
    the pivot and backward from ``z`` down to it, so the region's slack gathers in the pivot's segment."""
    starts, ends = units.starts, units.ends
    span = ends[z - 1] - starts[a]
    if span <= max_chars:
        out.append(a)
        return
    pivot = _strongest(units, a, z, starts[a] + span * (1 - zone) / 2, ends[z - 1] - span * (1 - zone) / 2, 1)
    left = [a]
    while True:
        # The furthest unit end within max_chars; a unit never exceeds max_chars, so it moves on.
        e = bisect.bisect_right(ends, starts[left[-1]] + max_chars, left[-1], z)
        if e >= z or e > pivot:
            break
        left.append(e)
    right = [z]
    while True:
        s = bisect.bisect_left(starts, ends[right[-1] - 1] - max_chars, a, right[-1] - 1)
        if s <= left[-1]:
            break
        right.append(s)
    # [left[-1], right[-1]) lies inside one backward segment, so it fits; the count is the least for [a, z).
    out.extend(left)
    out.extend(reversed(right[1:]))


def _pack_chapter(paragraphs: tuple[str, ...], max_chars: int, packing: Packing) -> list[tuple[str, Pause]]:
    """(text, pause after) of every packed segment of a chapter's body."""
    units = _units(paragraphs, max_chars)
    n = len(units.starts)
    if n == 0:
        return []
    anchors = _anchors(units, max_chars, packing)
    regions: list[int] = []
    for a, z in zip(anchors, [*anchors[1:], n], strict=True):
        _split_region(units, a, z, max_chars, packing, regions)
    firsts: list[int] = []
    for a, z in zip(regions, [*regions[1:], n], strict=True):
        _pack_region(units, a, z, max_chars, packing.pivot_zone, firsts)
    starts, ends, text = units.starts, units.ends, units.text
    # Two neighbours across an anchor can be short enough to share a request (a short last region): merge.
    bounds: list[tuple[int, int]] = []
    for a, z in zip(firsts, [*firsts[1:], n], strict=True):
        if bounds and ends[z - 1] - starts[bounds[-1][0]] <= max_chars:
            bounds[-1] = (bounds[-1][0], z)
        else:
            bounds.append((a, z))
    return [
        (text[starts[a] : ends[z - 1]], Pause.PARAGRAPH if units.paragraph_ends[z - 1] else Pause.SENTENCE)
        for a, z in bounds
    ]


# --------------------------------------------------------------------------------------------- chapters


def chunk_chapter(
    chapter: Chapter,
    max_chars: int,
    *,
    announce_title: bool = False,
    pack: bool = True,
    packing: Packing = DEFAULT_PACKING,
) -> tuple[Segment, ...]:
    """Segments of one chapter, in order. A spoken title is its own segment(s), TITLE after it; the chapter's
    last segment has END. With ``pack`` (the default) sentences are packed across paragraphs as the module
    docstring describes: a paragraph break inside a segment is a "\\n", and a segment is followed by PARAGRAPH
    when it ends a paragraph, SENTENCE when it ends inside one. ``pack=False`` keeps one paragraph per group of
    segments, as backends that want short requests (the offline voice) do."""
    if max_chars < 1:
        raise UsageError(f"max_chars must be at least 1, got {max_chars}; set a positive segment size")
    texts: list[str] = []
    pauses: list[Pause] = []

    def add(pieces: list[str], last_pause: Pause) -> None:
        if pieces:
            texts.extend(pieces)
            pauses.extend([Pause.SENTENCE] * (len(pieces) - 1) + [last_pause])

    if announce_title and chapter.title.strip():
        add(chunk_text(_fold_line_breaks(chapter.title) if pack else chapter.title, max_chars), Pause.TITLE)
    if pack:
        body = _pack_chapter(chapter.paragraphs, max_chars, packing)
        texts.extend(text for text, _ in body)
        pauses.extend(pause for _, pause in body)
    else:
        for paragraph in chapter.paragraphs:
            add(chunk_text(paragraph, max_chars), Pause.PARAGRAPH)
    if pauses:
        pauses[-1] = Pause.END
    return tuple(
        Segment(chapter=chapter.index, index=i, text=text, pause_after=pause)
        for i, (text, pause) in enumerate(zip(texts, pauses, strict=True))
    )


def chunk_book(
    book: Book,
    max_chars: int,
    *,
    announce_titles: bool = False,
    pack: bool = True,
    packing: Packing = DEFAULT_PACKING,
) -> tuple[tuple[Segment, ...], ...]:
    """One tuple of segments per chapter, in the book's order."""
    return tuple(
        chunk_chapter(c, max_chars, announce_title=announce_titles, pack=pack, packing=packing) for c in book.chapters
    )
