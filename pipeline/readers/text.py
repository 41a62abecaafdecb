"""Plain-text and Markdown books: decode, drop Gutenberg boilerplate and contents lists, find chapter
headings, join hard-wrapped lines into paragraphs and strip the markup a listener should not hear."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book, Chapter
from pipeline.text import decode_bytes, is_cjk, normalize_paragraph

# --- file and metadata


def load_text(path: Path) -> str:
    """The decoded text of ``path`` with LF line ends; InputError when it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file; check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, not a book file; name the file itself") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc
    return decode_bytes(data, str(path))


def pretty_stem(path: Path) -> str:
    """A title from a file name: "alice-pg11.txt" -> "Alice", "war_and_peace" -> "War And Peace"."""
    words = [w for w in re.split(r"[\s_\-.]+", path.stem) if w and not re.fullmatch(r"pg\d+", w, re.I)]
    if not words:
        return path.stem or "Untitled"
    if all(w.islower() or not w.isalpha() for w in words):
        words = [w[:1].upper() + w[1:] for w in words]
    return " ".join(words)


_GUTENBERG_START = re.compile(r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG", re.I)
_GUTENBERG_END = re.compile(
    r"^\s*(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg'?s?\b)", re.I
)
_CREDITS = re.compile(r"^\s*(?:Produced by|E-?text prepared by|Transcribed (?:from|by)|Prepared by)\b", re.I)
_META = re.compile(r"^\s*(Title|Author|Language)\s*:\s*(.+?)\s*$", re.I)
_CN_META = re.compile(r"^\s*(书名|書名|作者)\s*[：:]\s*(.+?)\s*$")


@dataclass
class _Parsed:
    title: str | None = None
    author: str | None = None
    skipped: list[str] = field(default_factory=list)


def _strip_gutenberg(lines: list[str], parsed: _Parsed) -> list[str]:
    """Cut the Project Gutenberg header and licence, keeping Title:/Author: from the header."""
    start = next((i for i, line in enumerate(lines) if _GUTENBERG_START.match(line)), None)
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
    end = next((i for i, line in enumerate(lines) if _GUTENBERG_END.match(line)), None)
    if end is not None:
        parsed.skipped.append(f"Project Gutenberg licence and footer ({len(lines) - end} lines)")
        lines = lines[:end]
    return lines


def _take_chinese_meta(lines: list[str], parsed: _Parsed) -> list[str]:
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


def _skip_contents(blocks: list[list[str]], parsed: _Parsed) -> list[list[str]]:
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


# --- paragraph text

_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")
_FOOTNOTE = re.compile(  # with the space before it, so "word [1]." becomes "word."
    "\\s*(?:[\u2460-\u249b\u24eb-\u24f4\u2776-\u2793]"  # ① ⑴ ⒈ ⓫ ❶ ➀ and their runs
    r"|\[\d{1,3}\]|［[0-9０-９]{1,3}］|〔[0-9０-９]{1,3}〕|【[0-9０-９]{1,3}】|\[(?:注|註)\s*\d{1,3}\])"
)
_TERMINATED = re.compile(r"[。！？!?…”’」』)）]\s*$")  # a line that ends a sentence, closing quote included


def clean_inline(text: str, *, markdown: bool = False) -> str:
    """Remove emphasis markers and footnote marks, then normalize."""
    text = _EMPHASIS.sub(r"\2", text)
    text = _EMPHASIS.sub(r"\2", text)  # nested: _*word*_
    if markdown:
        text = _INNER_UNDERSCORE.sub(" ", text)  # snake_case reads as two words
    # Underscores are italics in Gutenberg texts, also inside words ("_Un_important"); never spoken.
    text = text.replace("_", "")
    text = _FOOTNOTE.sub("", text)
    return normalize_paragraph(text)


def _speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


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
        if _speakable(text):
            paragraphs.append(text)
    return paragraphs


def _book(title: str, pairs: list[tuple[str, list[str]]], parsed: _Parsed, source: Path | None) -> Book:
    """The book from (title, paragraphs) pairs, numbered, leaving out chapters with nothing to read."""
    kept = [(name, paragraphs) for name, paragraphs in pairs if paragraphs]
    chapters = tuple(Chapter(index=i, title=t, paragraphs=tuple(p)) for i, (t, p) in enumerate(kept, start=1))
    return Book(title=title, chapters=chapters, author=parsed.author, source=source, skipped=tuple(parsed.skipped))


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
    parsed = _Parsed()
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
    return _book(book_title, chapters, parsed, source)


def read_text(path: Path) -> Book:
    """A plain-text book (``.txt``): Gutenberg boilerplate and contents lists are left out."""
    return parse_plain_text(load_text(path), default_title=pretty_stem(path), source=path)


# --- Markdown

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+.*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?")
_QUOTE = re.compile(r"^\s*(?:>[ \t]?)+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"\s*!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)|\[([^\]]+)\]\[[^\]]*\]")
_FOOTNOTE_REF = re.compile(r"\s*\[\^[^\]]+\]")
_AUTOLINK = re.compile(r"\s*<(?:https?|mailto|ftp):[^>]*>")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_STRIKE = re.compile(r"~~(.+?)~~", re.S)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])")


def markdown_inline(text: str) -> str:
    """Markdown inline syntax to plain words: links keep their text, images and footnote refs go."""
    text = _IMAGE.sub("", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _AUTOLINK.sub("", text)
    text = _TAG.sub("", text)
    text = _CODE.sub(r"\2", text)
    text = _STRIKE.sub(r"\1", text)
    # Escaped marks must survive emphasis removal: hide them, clean, then restore.
    escaped: list[str] = []

    def hide(match: re.Match[str]) -> str:
        escaped.append(match.group(1))
        return f"\ue000{len(escaped) - 1}\ue001"

    text = clean_inline(_ESCAPE.sub(hide, text), markdown=True)
    return re.sub("\ue000(\\d+)\ue001", lambda m: escaped[int(m.group(1))], text)


@dataclass
class _MdHeading:
    level: int
    text: str


def _markdown_items(text: str) -> list[_MdHeading | list[str]]:
    """Headings and paragraph line groups, in order; code, rules, link definitions and tables' rules gone."""
    items: list[_MdHeading | list[str]] = []
    current: list[str] = []

    def flush() -> None:
        nonlocal current
        if current:
            items.append(current)
            current = []

    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        if match := _FENCE.match(line):
            flush()
            fence = match.group(1)
            continue
        stripped = _QUOTE.sub("", line)
        if current and len(current) == 1 and (setext := _SETEXT.match(stripped)) and not _LIST_ITEM.match(current[0]):
            items.append(_MdHeading(1 if setext.group(1)[0] == "=" else 2, current[0].strip()))
            current = []
            continue
        if not stripped.strip() or _RULE.match(stripped) or _LINK_DEF.match(stripped):
            flush()
            continue
        if match := _ATX.match(stripped):
            flush()
            items.append(_MdHeading(len(match.group(1)), (match.group(2) or "").strip()))
            continue
        if _TABLE_RULE.match(stripped) and "-" in stripped:
            continue
        if _LIST_ITEM.match(stripped):
            flush()  # each list item is a paragraph of its own
            stripped = _LIST_ITEM.sub("", stripped)
        if stripped.strip().startswith("|"):
            stripped = ", ".join(cell.strip() for cell in stripped.strip().strip("|").split("|") if cell.strip())
            flush()
            current.append(stripped)
            flush()
            continue
        current.append(stripped)
    flush()
    return items


def parse_markdown(text: str, *, default_title: str, source: Path | None = None) -> Book:
    """A ``Book`` from Markdown text: the top heading level used more than once marks the chapters."""
    parsed = _Parsed()
    if front := _FRONT_MATTER.match(text):
        for line in front.group(1).split("\n"):
            if meta := re.match(r"^(title|author)\s*:\s*['\"]?(.*?)['\"]?\s*$", line, re.I):
                if meta.group(1).lower() == "title":
                    parsed.title = meta.group(2) or None
                else:
                    parsed.author = meta.group(2) or None
        text = text[front.end() :]
    text = _HTML_COMMENT.sub("", text)
    items = _markdown_items(text)

    headings = [item for item in items if isinstance(item, _MdHeading) and markdown_inline(item.text)]
    counts = {level: sum(1 for h in headings if h.level == level) for level in range(1, 7)}
    chapter_level = next((level for level in range(1, 7) if counts[level] > 1), None)
    title_heading: _MdHeading | None = None
    top = min((h.level for h in headings), default=None)
    if top is not None and counts[top] == 1 and (chapter_level is None or top < chapter_level):
        title_heading = next(h for h in headings if h.level == top)
    book_title = parsed.title or (markdown_inline(title_heading.text) if title_heading else default_title)

    chapters: list[tuple[str, list[str]]] = [("", [])]
    for item in items:
        if isinstance(item, _MdHeading):
            heading_text = markdown_inline(item.text)
            if item is title_heading or not heading_text:
                continue
            if item.level == chapter_level:
                chapters.append((heading_text, []))
            elif chapter_level is not None and item.level < chapter_level:
                continue  # a part heading above the chapters
            else:
                chapters[-1][1].append(heading_text)  # a section heading is read as its own paragraph
            continue
        paragraph = markdown_inline(" ".join(line.strip() for line in item))
        if _speakable(paragraph):
            chapters[-1][1].append(paragraph)
    if not chapters[0][0]:
        opening = "Opening" if len(chapters) > 1 else book_title
        chapters[0] = (opening, chapters[0][1])
    return _book(book_title, chapters, parsed, source)


def read_markdown(path: Path) -> Book:
    """A Markdown book (``.md``): ``#``/``##`` headings are chapters, markup is stripped."""
    return parse_markdown(load_text(path), default_title=pretty_stem(path), source=path)
