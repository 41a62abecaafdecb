"""Text -> segments: sentences packed greedily into pieces of at most ``max_chars`` characters.

Every function here works on character offsets into the original paragraph, so a piece is always an exact,
stripped substring and the gaps between pieces are whitespace only: no text is lost, doubled or reordered.
"""

from __future__ import annotations

import re
import unicodedata

from pipeline.errors import UsageError
from pipeline.models import Book, Chapter, Pause, Segment
from pipeline.text import CJK_CHAR

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


def chunk_chapter(chapter: Chapter, max_chars: int, *, announce_title: bool = False) -> tuple[Segment, ...]:
    """Segments of one chapter; none spans two paragraphs. Pauses: SENTENCE inside a paragraph, PARAGRAPH
    after its last piece, TITLE after a spoken title, END after the chapter's last segment."""
    texts: list[str] = []
    pauses: list[Pause] = []

    def add(pieces: list[str], last_pause: Pause) -> None:
        if pieces:
            texts.extend(pieces)
            pauses.extend([Pause.SENTENCE] * (len(pieces) - 1) + [last_pause])

    if announce_title and chapter.title.strip():
        add(chunk_text(chapter.title, max_chars), Pause.TITLE)
    for paragraph in chapter.paragraphs:
        add(chunk_text(paragraph, max_chars), Pause.PARAGRAPH)
    if pauses:
        pauses[-1] = Pause.END
    return tuple(
        Segment(chapter=chapter.index, index=i, text=text, pause_after=pause)
        for i, (text, pause) in enumerate(zip(texts, pauses, strict=True))
    )


def chunk_book(book: Book, max_chars: int, *, announce_titles: bool = False) -> tuple[tuple[Segment, ...], ...]:
    """One tuple of segments per chapter, in the book's order."""
    return tuple(chunk_chapter(c, max_chars, announce_title=announce_titles) for c in book.chapters)
