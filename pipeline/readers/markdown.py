"""Markdown books: the top heading level used more than once marks the chapters; markup is stripped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.models import Book
from pipeline.readers.common import Parsed, clean_inline, load_text, make_book, pretty_stem, speakable

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
    parsed = Parsed()
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
            elif speakable(heading_text):
                chapters[-1][1].append(heading_text)  # a section heading is read as its own paragraph
            continue
        paragraph = markdown_inline(" ".join(line.strip() for line in item))
        if speakable(paragraph):
            chapters[-1][1].append(paragraph)
    if not chapters[0][0]:
        opening = "Opening" if len(chapters) > 1 else book_title
        chapters[0] = (opening, chapters[0][1])
    return make_book(book_title, chapters, parsed, source)


def read_markdown(path: Path) -> Book:
    """A Markdown book (``.md``): ``#``/``##`` headings are chapters, markup is stripped."""
    return parse_markdown(load_text(path), default_title=pretty_stem(path), source=path)
