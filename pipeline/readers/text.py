"""Plain-text books: decode, drop Gutenberg boilerplate, reading-site boilerplate and contents lists, find
chapter headings (and the volumes above them), join hard-wrapped lines into paragraphs and strip the markup a
listener should not hear.

Long web novels (thousands of chapters, millions of characters) are the largest inputs: every step here is
one pass over the lines or blocks, and each block's heading is parsed once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from pipeline.models import Book
from pipeline.readers.boilerplate import describe, drop_boilerplate
from pipeline.readers.common import Parsed, clean_inline, load_text, make_book, pretty_stem, speakable
from pipeline.textfacts import CJK_CHAR, GUTENBERG_END, GUTENBERG_START, is_cjk

# --- Project Gutenberg and metadata

_CREDITS = re.compile(r"^\s*(?:Produced by|E-?text prepared by|Transcribed (?:from|by)|Prepared by)\b", re.I)
_META = re.compile(r"^\s*(Title|Author|Language)\s*:\s*(.+?)\s*$", re.I)
_CN_BLURB = re.compile(r"^\s*(?:简介|簡介|内容简介|內容簡介)\s*[：:]\s*(.*?)\s*$")
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
        blurb = _CN_BLURB.match(line)
        if blurb and parsed.description is None:
            # 简介 and its paragraphs up to the next blank line: the book's description for players. It stays
            # in the text too (read as the opening chapter), as the listener hears the book's back cover.
            taken = [blurb.group(1)] if blurb.group(1) else []
            for later in lines[i + 1 : i + 30]:
                if later.strip():
                    taken.append(later.strip())
                elif taken:
                    break
            parsed.description = "\n\n".join(taken) or None
            continue
        meta = _CN_META.match(line)
        if meta:
            if meta.group(1) == "作者":
                parsed.author = parsed.author or meta.group(2)
            else:
                parsed.title = parsed.title or meta.group(2).strip("《》")
            lines[i] = ""
    return lines


_AUTHOR_LINE = re.compile(
    r"^\s*(?:(?:by|By|BY)\s+|(?:Author|AUTHOR|author|作者|著者)\s*[：:]\s*)(?P<name>\S.{0,80}?)\s*$"
)
_AUTHOR_AFTER = re.compile(r"^\s*(?P<name>\S.{0,40}?)\s*[（(]?(?:著|编著|撰)[)）]?\s*$")  # "张若虚 著"


def _take_title_lines(lines: list[str], parsed: Parsed) -> list[str]:
    """A book's own title line (and author line under it) before its text: "Title", then "by Author" or
    "作者：…", then a blank line. Taken only when what follows is not the title line's own paragraph, so the
    first line of a story is never mistaken for its title; both lines leave the text."""
    if parsed.title:
        return lines
    filled = [i for i, line in enumerate(lines[:200]) if line.strip()]
    if len(filled) < 2:
        return lines
    first = filled[0]
    if not _looks_like_title(lines[first]) or _CN_META.match(lines[first]):
        return lines
    taken = [first]
    author = None
    following = filled[1]
    match = _AUTHOR_LINE.match(lines[following]) or _AUTHOR_AFTER.match(lines[following])
    # "张若虚 著" alone is too loose a pattern unless it sits right under the title.
    if match and (following == first + 1 or _AUTHOR_LINE.match(lines[following])):
        author = match.group("name").strip()
        taken.append(following)
        following = next((i for i in filled if i > following), len(lines))
    elif following == first + 1 or not parse_heading(lines[following]):
        # Without an author line, only a title standing alone with a heading next is sure to be the title:
        # a short line before prose may be a story's first line or a section's opening.
        return lines
    parsed.title = " ".join(lines[first].split())
    parsed.author = parsed.author or author
    for i in taken:
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
_EN_VOLUMES = frozenset({"part", "book", "volume", "vol"})
_CN_NUM = "0-9０-９零〇一二三四五六七八九十百千万两"
_CN_HEADING = re.compile(rf"^(?P<label>第\s*[{_CN_NUM}]+\s*[章回节節卷部篇集幕话話])(?P<rest>.*)$")
_CN_VOLUMES = "卷部篇集"  # above chapters when the book also has 章/回/节 headings; chapters themselves otherwise
_CN_NAMED = re.compile(
    r"^(?P<label>序章|序言|序幕|序|楔子|引子|引言|前言|内容简介|内容提要|作品简介|简介|簡介|尾声|尾聲|终章|終章"
    r"|后记|後記|外传|外傳"
    rf"|番外篇?[{_CN_NUM}]*)"
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
    volume: bool = False  # a volume or part label (第一卷, Part One): above chapters when the book has both

    @property
    def text(self) -> str:
        if not self.title:
            return self.label
        separator = " " if is_cjk(self.label) else ". "
        return f"{self.label}{separator}{self.title}"

    def with_title(self, title: str) -> _Heading:
        return _Heading(self.label, title, self.key, self.bare, self.volume)

    def same(self, other: _Heading) -> bool:
        """Whether ``other`` is this heading again (a contents entry and its chapter): same label, and the same
        title unless one of them has none (the chapter may carry its title on the next line)."""
        if self.key != other.key:
            return False
        return not self.title or not other.title or _fold(self.title) == _fold(other.title)

    @property
    def numbered(self) -> bool:
        """第三章, Chapter 3, 八: a numbered heading, not a named one (序章, Prologue)."""
        return self.bare or self.label.startswith("第") or (self.key[0] != "cn" and bool(self.key[1]))

    @property
    def spoken_alone(self) -> bool:
        """A bare Chinese numeral (八) is the whole title: the line after it is the section's first line."""
        return self.bare and self.key[0] == "cn"


def _fold(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


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
        volume = word.lower() in _EN_VOLUMES
        return _Heading(f"{word} {shown}", title, (word.lower(), num.lower()), volume=volume)
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
        return _Heading(label, title, ("cn", label), volume=label.startswith("第") and label[-1] in _CN_VOLUMES)
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


def _starts_block(heading: _Heading, previous: _Heading | None, split_bare: bool) -> bool:
    """Whether a heading inside a block starts a new one. Chinese files often have no blank lines at all, so
    unmistakable headings count: 第…章 lines, a label alone like "CHAPTER II.", a heading right under another
    (a contents list), and bare Chinese numerals when the book numbers its sections with them (``split_bare``);
    not a wrapped line that happens to begin with "Chapter 3. Then ..."."""
    if heading.bare:
        return split_bare and heading.spoken_alone
    return heading.key[0] == "cn" or not heading.title or (previous is not None and not previous.bare)


def _split_at_headings(
    blocks: list[list[str]], *, split_bare: bool = False
) -> tuple[list[list[str]], list[_Heading | None]]:
    """Start a new block at each heading inside a block (see ``_starts_block``); also the heading of each
    resulting block's first line, parsed once here for every later step."""
    result: list[list[str]] = []
    heads: list[_Heading | None] = []
    for block in blocks:
        current: list[str] = []
        first: _Heading | None = None
        previous: _Heading | None = None
        for line in block:
            heading = parse_heading(line)
            if current and (
                (heading is not None and _starts_block(heading, previous, split_bare))
                or (split_bare and previous is not None and previous.spoken_alone and len(current) == 1)
            ):
                result.append(current)
                heads.append(first)
                current = []
            if not current:
                first = heading
            current.append(line)
            previous = heading
        result.append(block if len(current) == len(block) else current)  # unsplit: no copy of a big book's blocks
        heads.append(first)
    return result, heads


_CN_DIGITS = {c: n for n, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}


def cn_number(text: str) -> int | None:
    """一千二百零三 -> 1203, 十五 -> 15, 一〇五 -> 105, 12 -> 12; None when ``text`` is not a number."""
    if text.isdecimal():
        return int(text)
    if text and all(c in _CN_DIGITS for c in text):
        return int("".join(str(_CN_DIGITS[c]) for c in text))  # digit by digit, as in years
    total = section = 0
    digit: int | None = None
    for c in text:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        elif c in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[c]
            digit = None
        elif c == "万":
            total += (section + (digit or 0)) * 10_000
            section, digit = 0, None
        else:
            return None
    return total + section + (digit or 0) if text else None


def _numbers_sections(lines: Iterable[str]) -> bool:
    """Whether the book's bare Chinese numeral lines count its sections (一, 二, 三 ...): at least two, and
    mostly each one more than the one before. Then they are headings wherever they stand."""
    values = [cn_number(s) for line in lines if (s := line.strip()) and len(s) <= 6 and _CN_BARE.match(s)]
    steps = sum(b == a + 1 for a, b in pairwise(values) if a is not None and b is not None)
    return len(values) >= 2 and steps * 10 >= (len(values) - 1) * 6


_CONTENTS = re.compile(r"^(?:table of )?contents[.:]?$|^目\s*[录錄]$", re.I)


def _width(text: str) -> int:
    """Columns on a terminal: CJK characters (punctuation included) take two."""
    return len(text) + len(CJK_CHAR.findall(text))


def _is_prose(block: Sequence[str]) -> bool:
    widths = [_width(line.strip()) for line in block]
    if any(w > 100 for w in widths):
        return True
    return len(block) >= 2 and sum(widths) / len(widths) >= 55


Blocks = tuple[list[list[str]], list[_Heading | None]]  # blocks and the heading each one opens with


def _skip_contents(blocks: list[list[str]], heads: list[_Heading | None], parsed: Parsed) -> Blocks:
    """Remove a contents list: a "Contents" line followed by short lines, ending where the first chapter it
    lists really begins (the first entry's heading repeats) or at the last heading before the first prose.
    Without a "Contents" line, see ``_skip_heading_list``."""
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
        return _skip_heading_list(blocks, heads, parsed)
    at, row = found
    entries = [(at, line) for line in blocks[at][row + 1 :]]
    for i in range(at + 1, first_prose):
        entries.extend((i, line) for line in blocks[i])
    if len(entries) < 2:
        return blocks, heads
    first = parse_heading(entries[0][1])
    end = first_prose
    headings = [i for i in range(at + 1, first_prose) if heads[i]]
    if first is not None:
        repeat = next(
            (
                i
                for i in range(entries[0][0] + 1, min(first_prose + 1, len(blocks)))
                if (h := heads[i]) and first.same(h)
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
        return blocks, heads
    dropped = sum(len(b) for b in blocks[at:end]) - row
    parsed.skipped.append(f"table of contents ({dropped} lines)")
    if row:
        return blocks[:at] + [blocks[at][:row]] + blocks[end:], heads[: at + 1] + heads[end:]
    return blocks[:at] + blocks[end:], heads[:at] + heads[end:]


def _skip_heading_list(blocks: list[list[str]], heads: list[_Heading | None], parsed: Parsed) -> Blocks:
    """Remove a contents list that has no "Contents" line, as web novels open: the first run of three or more
    headings alone on their lines, when its first entry comes back later. Only those heading lines go, never
    a line of text: the list ends where its first entry repeats, or where the run of headings does."""

    def alone(i: int) -> bool:
        return heads[i] is not None and len(blocks[i]) == 1

    start = 0
    while start < len(blocks):
        if not alone(start):
            start += 1
            continue
        stop = next((i for i in range(start, len(blocks)) if not alone(i)), len(blocks))
        if stop - start >= 3:
            break
        start = stop
    else:
        return blocks, heads
    first = heads[start]
    assert first is not None
    repeat = next((i for i in range(start + 1, len(blocks)) if (h := heads[i]) and first.same(h)), None)
    if repeat is None or repeat < start + 2:
        return blocks, heads
    end = min(repeat, stop)
    parsed.skipped.append(f"table of contents ({end - start} lines)")
    return blocks[:start] + blocks[end:], heads[:start] + heads[end:]


# --- paragraphs

_TERMINATED = re.compile(r"[。！？!?…”’」』)）]\s*$")  # a line that ends a sentence, closing quote included


def _paragraph_lines(block: list[str]) -> list[list[str]]:
    """Split a block into paragraphs. Blank lines already did most of the work; Chinese files also mark
    paragraphs with an indented first line, or put one paragraph per line with no blank lines at all. In
    that last layout a line that stops mid-sentence is hard-wrapped: the next line continues it."""
    if len(block) == 1 or not is_cjk("".join(block)):
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


def _sections(blocks: list[list[str]], heads: list[_Heading | None]) -> list[tuple[_Heading | None, list[list[str]]]]:
    """Group blocks under the headings that open them; the first group (None) is the text before any."""
    bare_count = sum(1 for b, h in zip(blocks, heads, strict=True) if h and h.bare and len(b) == 1)
    sections: list[tuple[_Heading | None, list[list[str]]]] = [(None, [])]
    pending_title = False  # the last heading stood alone; the next short line may be its title
    for block, heading in zip(blocks, heads, strict=True):
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
        # A bare Chinese numeral is the whole title: a short line after it is the section's first line.
        if not heading.title and not heading.spoken_alone and len(block) == 2 and _looks_like_title(block[1]):
            heading, rest = heading.with_title(_title_case(block[1].strip())), []
        sections.append((heading, [rest] if rest else []))
        pending_title = not heading.title and not rest and not heading.spoken_alone
    return sections


def parse_plain_text(
    text: str, *, default_title: str, source: Path | None = None, include_matter: bool = False
) -> Book:
    """A ``Book`` from the text of a plain-text file. ``include_matter`` keeps reading-site boilerplate and
    a closing "THE END" (Gutenberg's header and licence and contents lists are left out all the same)."""
    return _parse_lines(
        text.split("\n"), is_cjk(text[:5000]), default_title=default_title, source=source, include_matter=include_matter
    )


def _parse_lines(
    source_lines: list[str], cjk: bool, *, default_title: str, source: Path | None, include_matter: bool
) -> Book:
    """``parse_plain_text`` on the text's lines, which it empties: a long book's lines are let go as its
    paragraphs are made, so its text is never held three times over."""
    parsed = Parsed()
    lines = list(source_lines)
    source_lines.clear()
    lines = _strip_gutenberg(lines, parsed)
    lines = _take_chinese_meta(lines, parsed)
    lines = _take_title_lines(lines, parsed)
    dropped: Counter[str] = Counter()
    if not include_matter:
        lines, dropped = drop_boilerplate(lines)
    blocks, heads = _split_at_headings(_blocks(lines), split_bare=_numbers_sections(lines))
    del lines
    blocks, heads = _skip_contents(blocks, heads, parsed)
    parsed.skipped.extend(describe(dropped))
    sections = _sections(blocks, heads)
    del blocks, heads

    # Volumes (第一卷, Part One) above numbered chapters: chapters stay the unit, and each names its volume.
    headings = [h for h, _ in sections if h is not None]
    volumes = any(h.volume for h in headings) and any(h.numbered and not h.volume for h in headings)
    chapters: list[tuple[str, list[str]]] = []
    parts: list[str | None] = []
    part: str | None = None
    book_title = parsed.title or default_title
    first_heading = sections[1][0] if len(sections) > 1 else None
    for heading, section_blocks in sections:
        paragraphs = [p for block in section_blocks for p in block_paragraphs(block)]
        section_blocks.clear()  # its lines, now that its paragraphs are made
        if heading is None:
            title = book_title if len(sections) == 1 else _opening_title(first_heading, "开篇" if cjk else "Opening")
        else:
            title = heading.text
            if volumes and heading.volume:
                part = title
        # An empty heading followed by another (PART ONE, then CHAPTER 1) is a part divider: nothing to read.
        if paragraphs:
            chapters.append((title, paragraphs))
            parts.append(part)

    if not include_matter and chapters and chapters[-1][1] and _THE_END.match(chapters[-1][1][-1]):
        parsed.skipped.append(f"end marker {chapters[-1][1][-1]!r}")
        chapters[-1][1].pop()
    return make_book(book_title, chapters, parsed, source, parts)


def read_text(path: Path, *, include_matter: bool = False) -> Book:
    """A plain-text book (``.txt``): Gutenberg boilerplate, reading-site boilerplate (unless
    ``include_matter``) and contents lists are left out."""
    text = load_text(path)
    lines, cjk = text.split("\n"), is_cjk(text[:5000])
    del text  # not held beside its lines and paragraphs while they are read
    return _parse_lines(lines, cjk, default_title=pretty_stem(path), source=path, include_matter=include_matter)
