"""Plain-text books: decode, drop Gutenberg boilerplate and contents lists, find chapter headings, join
hard-wrapped lines into paragraphs and strip the markup a listener should not hear."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import Book
from pipeline.readers.common import Parsed, clean_inline, load_text, make_book, pretty_stem, speakable
from pipeline.text import GUTENBERG_END, GUTENBERG_START, is_cjk

# --- Project Gutenberg and metadata

_CREDITS = re.compile(r"^\s*(?:Produced by|E-?text prepared by|Transcribed (?:from|by)|Prepared by)\b", re.I)
_META = re.compile(r"^\s*(Title|Author|Language)\s*:\s*(.+?)\s*$", re.I)
_CN_META = re.compile(r"^\s*(书名|書名|作者)\s*[：:]\s*(.+?)\s*$")


def _strip_gutenberg(lines: list[str], parsed: Parsed) -> list[str]:
    """Cut the Project Gutenberg header and licence, keeping Title:/Author: from the header."""
    start = next((i for i, line in enumerate(lines) if GUTENBERG_START.match(line)), None)
    if start is not None:
        for line in lines[:start]:
            meta = _META.match(line)
            if meta and meta.group(1).lower() == "title" and not parsed.title:
                parsed.title = meta.group(2)
            elif meta and meta.group(1).lower() == "author" and not parsed.author:
                parsed.author = meta.group(2)
        parsed.skipped.append(f"Project Gutenberg header ({start + 1} lines)")
        lines = lines[start + 1 :]
        # Transcriber credits right after the header are not part of the book.
        for i, line in enumerate(lines[:20]):
            if _CREDITS.match(line):
                stop = next((j for j in range(i, len(lines)) if not lines[j].strip()), len(lines))
                parsed.skipped.append(f"transcriber credits ({stop - i} lines)")
                lines = lines[:i] + lines[stop:]
                break
    end = next((i for i, line in enumerate(lines) if GUTENBERG_END.match(line)), None)
    if end is not None:
        parsed.skipped.append(f"Project Gutenberg licence and footer ({len(lines) - end} lines)")
        lines = lines[:end]
    return lines


def _take_chinese_meta(lines: list[str], parsed: Parsed) -> list[str]:
    """Chinese web novels often open with 书名：… and 作者：… lines."""
    seen = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        seen += 1
        if seen > 8:
            break
        meta = _CN_META.match(line)
        if meta:
            if meta.group(1) == "作者":
                parsed.author = parsed.author or meta.group(2)
            else:
                parsed.title = parsed.title or meta.group(2).strip("《》")
            lines[i] = ""
    return lines


# --- headings

# fmt: off
_NUMBER_WORDS = [
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
    "thirty", "forty", "fifty", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
    "eighth", "ninth", "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth",
    "sixteenth", "seventeenth", "eighteenth", "nineteenth", "twentieth", "last",
]
# fmt: on
_EN_HEADING = re.compile(
    r"^(?P<label>chapter|chap\.|part|book|volume|vol\.|section|canto|stave|letter|act|scene)\s+"
    r"(?P<num>[ivxlcdm]+|\d{1,4}|(?:"
    + "|".join(_NUMBER_WORDS)
    + r")(?:[- ](?:"
    + "|".join(_NUMBER_WORDS)
    + r"))?)\b(?P<rest>.*)$",
    re.I,
)
_EN_NAMED = re.compile(
    r"^(?P<label>prologue|epilogue|preface|introduction|foreword|afterword|interlude|conclusion|appendix)"
    r"\b(?P<rest>.*)$",
    re.I,
)
_CN_NUM = "0-9０-９零〇一二三四五六七八九十百千万两"
_CN_HEADING = re.compile(rf"^(?P<label>第\s*[{_CN_NUM}]+\s*[章回节節卷部篇集幕话話])(?P<rest>.*)$")
_CN_NAMED = re.compile(
    rf"^(?P<label>序章|序言|序幕|序|楔子|引子|引言|前言|尾声|尾聲|终章|終章|后记|後記|番外[{_CN_NUM}]*)"
    r"(?P<rest>(?:[\s:：·、.．-].*)?)$"
)
_CN_BARE = re.compile("^[零〇一二三四五六七八九十百千两]{1,6}$")
_ROMAN_BARE = re.compile(r"^[IVXLC]{1,7}\.?$")
_SENTENCE_FINAL = tuple(".,;。，；、")


@dataclass(frozen=True)
class _Heading:
    label: str  # "Chapter II", "第一章", "Prologue"
    title: str  # the title that follows the label, or ""
    key: tuple[str, str]  # (kind, number) to recognise the same heading in a contents list
    bare: bool = False  # a numeral alone on its line: trusted only when the book has several

    @property
    def text(self) -> str:
        if not self.title:
            return self.label
        separator = " " if is_cjk(self.label) else ". "
        return f"{self.label}{separator}{self.title}"

    def with_title(self, title: str) -> _Heading:
        return _Heading(self.label, title, self.key, self.bare)


def _title_case(text: str) -> str:
    """THE POOL OF TEARS -> The Pool Of Tears; mixed case is left alone."""
    if not text.isupper():
        return text
    return " ".join(w[:1] + w[1:].lower() for w in text.split(" "))


def _rest_title(rest: str) -> str | None:
    """The title after a heading label, "" for none, or None when ``rest`` shows the line is prose."""
    rest = rest.strip()
    if not rest:
        return ""
    title = rest.lstrip(".:-—–)]·、 　：．").strip()
    if not title:
        return ""
    if rest[0].isalnum() and not is_cjk(rest[0]) and title[0].islower():
        return None  # "Part one of the plan was ..."
    if title[0].islower() or title.endswith((",", ";", "，", "；", "、")):
        return None
    return _title_case(title.rstrip(".").strip())


def parse_heading(line: str) -> _Heading | None:
    """A chapter heading on one line, or None."""
    line = line.strip().replace("\u3000", " ")
    if not line or len(line) > 80:
        return None
    if match := _EN_HEADING.match(line):
        label, num = match.group("label"), match.group("num")
        if not label[0].isupper():
            return None
        title = _rest_title(match.group("rest"))
        if title is None:
            return None
        if re.fullmatch(r"[ivxlcdm]+", num, re.I):
            shown = num.upper()
        else:
            shown = "-".join(w.capitalize() for w in re.split(r"[- ]", num)) if num.isalpha() else num
        word = label.rstrip(".").capitalize()
        return _Heading(f"{word} {shown}", title, (word.lower(), num.lower()))
    if match := _EN_NAMED.match(line):
        label = match.group("label")
        title = _rest_title(match.group("rest"))
        if not label[0].isupper() or title is None:
            return None
        return _Heading(label.capitalize(), title, (label.lower(), ""))
    if len(line) <= 40 and (match := (_CN_HEADING.match(line) or _CN_NAMED.match(line))):
        label = re.sub(r"\s+", "", match.group("label"))
        rest = match.group("rest").strip()
        if rest.endswith(("。", "，", "；", "！", "？", "”")) and len(rest) > 12:
            return None  # a sentence that starts with 第一回...
        title = rest.lstrip(":：·、.．- ").strip()
        return _Heading(label, title, ("cn", label))
    if _CN_BARE.match(line):
        return _Heading(line, "", ("cn", line), bare=True)
    if _ROMAN_BARE.match(line):
        return _Heading(line.rstrip("."), "", ("roman", line.rstrip(".")), bare=True)
    return None


def _looks_like_title(line: str) -> bool:
    """A short line after a bare heading that names the chapter ("The Pool of Tears")."""
    line = line.strip()
    limit = 30 if is_cjk(line) else 80
    if not line or len(line) > limit or parse_heading(line):
        return False
    if line.startswith(("“", '"', "‘", "'", "「", "『", "(", "（", "[")):
        return False
    return not line.endswith(_SENTENCE_FINAL)


# --- blocks, contents list, separators

_SEPARATOR = re.compile(r"^[\s*\-_=~#·•※+.◇◆○●☆★]*$")


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and _SEPARATOR.match(stripped) is not None and sum(not c.isspace() for c in stripped) >= 3


def _blocks(lines: Iterable[str]) -> list[list[str]]:
    """Runs of non-blank lines; separator lines (``* * *``, ``-----``) count as blank."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if not line.strip() or _is_separator(line):
            if current:
                blocks.append(current)
                current = []
        else:
            current.append(line.rstrip())
    if current:
        blocks.append(current)
    return blocks


def _split_at_headings(blocks: list[list[str]]) -> list[list[str]]:
    """Chinese files often have no blank lines at all: start a new block at a heading inside a block. Only
    unmistakable headings count (第…章 lines, or a label alone like "CHAPTER II."), not a wrapped line that
    happens to begin with "Chapter 3. Then ..."."""
    result: list[list[str]] = []
    for block in blocks:
        current: list[str] = []
        for line in block:
            heading = parse_heading(line) if current else None
            if heading and not heading.bare and (heading.key[0] == "cn" or not heading.title):
                result.append(current)
                current = []
            current.append(line)
        result.append(current)
    return result


_CONTENTS = re.compile(r"^(?:table of )?contents[.:]?$|^目\s*[录錄]$", re.I)


def _width(text: str) -> int:
    return sum(2 if is_cjk(c) else 1 for c in text)


def _is_prose(block: Sequence[str]) -> bool:
    widths = [_width(line.strip()) for line in block]
    if any(w > 100 for w in widths):
        return True
    return len(block) >= 2 and sum(widths) / len(widths) >= 55


def _skip_contents(blocks: list[list[str]], parsed: Parsed) -> list[list[str]]:
    """Remove a contents list: a "Contents" line followed by short lines, ending where the first chapter it
    lists really begins (the first entry's heading repeats) or at the last heading before the first prose."""
    first_prose = next((i for i, b in enumerate(blocks) if _is_prose(b)), len(blocks))
    found = next(
        (
            (i, j)
            for i, block in enumerate(blocks[:first_prose])
            for j, line in enumerate(block)
            if _CONTENTS.match(line.strip())
        ),
        None,
    )
    if found is None:
        return blocks
    at, row = found
    entries = [(at, line) for line in blocks[at][row + 1 :]]
    for i in range(at + 1, first_prose):
        entries.extend((i, line) for line in blocks[i])
    if len(entries) < 2:
        return blocks
    first = parse_heading(entries[0][1])
    end = first_prose
    headings = [i for i in range(at + 1, first_prose) if parse_heading(blocks[i][0])]
    if first is not None:
        repeat = next(
            (
                i
                for i in range(entries[0][0] + 1, first_prose + 1)
                if i < len(blocks) and (h := parse_heading(blocks[i][0])) and h.key == first.key
            ),
            None,
        )
        if repeat is not None:
            end = repeat
        elif headings:
            end = headings[-1]
    elif headings:
        end = headings[-1]
    if end <= at:
        return blocks
    dropped = sum(len(b) for b in blocks[at:end]) - row
    parsed.skipped.append(f"table of contents ({dropped} lines)")
    return blocks[:at] + ([blocks[at][:row]] if row else []) + blocks[end:]


# --- paragraphs

_TERMINATED = re.compile(r"[。！？!?…”’」』)）]\s*$")  # a line that ends a sentence, closing quote included


def _paragraph_lines(block: list[str]) -> list[list[str]]:
    """Split a block into paragraphs. Blank lines already did most of the work; Chinese files also mark
    paragraphs with an indented first line, or put one paragraph per line with no blank lines at all. In
    that last layout a line that stops mid-sentence is hard-wrapped: the next line continues it."""
    if not is_cjk("".join(block)):
        return [block]
    per_line = len(block) >= 3 and sum(bool(_TERMINATED.search(line)) for line in block) >= 0.6 * len(block)
    groups: list[list[str]] = []
    for line in block:
        indented = line.startswith(("\u3000", "  ", "\t"))
        if not groups or indented or (per_line and _TERMINATED.search(groups[-1][-1])):
            groups.append([line])
        else:
            groups[-1].append(line)
    return groups


def block_paragraphs(block: list[str]) -> list[str]:
    paragraphs = []
    for lines in _paragraph_lines(block):
        text = clean_inline(" ".join(line.strip() for line in lines))
        if speakable(text):
            paragraphs.append(text)
    return paragraphs


# --- plain text

_THE_END = re.compile(r"^[\s(（]*(?:the end|finis|end|全[文书書]完|完|全文终|终)[\s.。!！)）]*$", re.I)


def _opening_title(first: _Heading | None, fallback: str) -> str:
    """A name for the text before the first heading. When the first heading is chapter 2, the file lost
    chapter 1's heading (Gutenberg's Alice does): call it chapter 1 in the same style."""
    if first is not None and not first.bare:
        kind, num = first.key
        if num.lower() == "ii":
            return first.label[: -len(num)] + "I"
        if num == "2" or num.lower() == "two":
            return first.label[: -len(num)] + ("1" if num.isdigit() else "One")
        if kind == "cn" and re.fullmatch(r"第\s*[二2２]\s*\w", num):
            return num.replace("二", "一").replace("2", "1").replace("２", "１")
    return fallback


def parse_plain_text(text: str, *, default_title: str, source: Path | None = None) -> Book:
    """A ``Book`` from the text of a plain-text file."""
    parsed = Parsed()
    lines = _strip_gutenberg(text.split("\n"), parsed)
    lines = _take_chinese_meta(lines, parsed)
    blocks = _skip_contents(_split_at_headings(_blocks(lines)), parsed)

    bare_count = sum(1 for b in blocks if (h := parse_heading(b[0])) and h.bare and len(b) == 1)
    sections: list[tuple[_Heading | None, list[list[str]]]] = [(None, [])]
    pending_title = False  # the last heading stood alone; the next short line may be its title
    for block in blocks:
        heading = parse_heading(block[0])
        if heading and heading.bare and (bare_count < 2 or len(block) > 1):
            heading = None
        if heading is None:
            if pending_title and len(block) == 1 and _looks_like_title(block[0]):
                previous = sections[-1][0]
                assert previous is not None
                sections[-1] = (previous.with_title(_title_case(block[0].strip())), [])
            else:
                sections[-1][1].append(block)
            pending_title = False
            continue
        rest = block[1:]
        if not heading.title and len(block) == 2 and _looks_like_title(block[1]):
            heading, rest = heading.with_title(_title_case(block[1].strip())), []
        sections.append((heading, [rest] if rest else []))
        pending_title = not heading.title and not rest

    chapters: list[tuple[str, list[str]]] = []
    book_title = parsed.title or default_title
    first_heading = sections[1][0] if len(sections) > 1 else None
    cjk = is_cjk(text[:5000])
    for heading, section_blocks in sections:
        paragraphs = [p for block in section_blocks for p in block_paragraphs(block)]
        if heading is None:
            title = book_title if len(sections) == 1 else _opening_title(first_heading, "开篇" if cjk else "Opening")
        else:
            title = heading.text
        # An empty heading followed by another (PART ONE, then CHAPTER 1) is a part divider: nothing to read.
        if paragraphs:
            chapters.append((title, paragraphs))

    if chapters and chapters[-1][1] and _THE_END.match(chapters[-1][1][-1]):
        parsed.skipped.append(f"end marker {chapters[-1][1][-1]!r}")
        chapters[-1][1].pop()
    return make_book(book_title, chapters, parsed, source)


def read_text(path: Path) -> Book:
    """A plain-text book (``.txt``): Gutenberg boilerplate and contents lists are left out."""
    return parse_plain_text(load_text(path), default_title=pretty_stem(path), source=path)
