"""A web page's article by trafilatura: its main text as blocks (paragraphs and headings), without navigation,
comments, share bars and footers, and what the page says about itself (title, author, site, date,
description).

trafilatura is given the tree our own parser made (``htmltext.parse_html``: entities refused, libxml2's limits
kept, the hidden-text guard run), so it never parses the page itself. It does not run our checks on what it
drops, so the HTML reader compares what it kept with the page's visible text (``html.read_html``)."""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass

from lxml import etree

from pipeline.readers.htmltext import Block
from pipeline.textfacts import normalize_paragraph


@dataclass(frozen=True)
class Article:
    blocks: tuple[Block, ...]
    title: str | None = None
    author: str | None = None
    site: str | None = None
    date: str | None = None
    description: str | None = None
    url: str | None = None


# trafilatura's output elements that make a block of their own; "head" is a heading (rend="h2").
_BLOCKS = frozenset({"p", "head", "quote", "item", "code", "row", "cell", "list", "table"})


def _text(el: etree._Element) -> str:
    # <lb/> is a line break inside a paragraph: a space when spoken.
    parts: list[str] = []
    for node in el.iter():
        if node is not el and node.tag == "lb":
            parts.append(" ")
        elif node.text and (node is el or node.tag not in _BLOCKS):
            parts.append(node.text)
        if node is not el and node.tail:
            parts.append(node.tail)
    return normalize_paragraph("".join(parts))


def _blocks(body: etree._Element) -> list[Block]:
    found: list[Block] = []
    for el in body:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "list":
            found += [b for item in el.iter("item") if (b := _block(item, 0))]
        elif tag == "table":
            for row in el.iter("row"):
                cells = [_text(c) for c in row.iter("cell")]
                text = normalize_paragraph(" ".join(c for c in cells if c))
                if any(ch.isalnum() for ch in text):
                    found.append(Block(text))
        elif tag in _BLOCKS or tag in ("div", "section"):
            if tag in ("div", "section"):
                found += _blocks(el)
            elif block := _block(el, _heading_level(el) if tag == "head" else 0):
                found.append(block)
    return found


def _block(el: etree._Element, heading: int) -> Block | None:
    text = _text(el)
    return Block(text, heading) if any(c.isalnum() for c in text) else None


def _heading_level(el: etree._Element) -> int:
    rend = (el.get("rend") or "").lower()
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1] in "123456" else 2


# Lines a page puts around its article, not of it: editors, sources, corrections, share bars, copyright
# (Chinese portals end nearly every article with "【纠错】 责任编辑：…"). Only short blocks at the article's edges
# are judged, so a sentence that mentions an editor is never touched.
_EDGE_LINE = re.compile(
    r"责任编辑|【?纠错】?|^图集|^\+?\d+$|^\s*[（(\[【]?\s*(?:编辑|责编|校对|审核|来源|作者|记者|出处|原标题)\s*[:：]"
    r"|版权所有|版权声明|转载请注明|分享到|扫一扫|打印本页|关闭窗口|【字号|^字号|^\s*\d{4}[-年/.]\d{1,2}[-月/.]\d{1,2}"
    r"|^(?:share|share this|advertisement|related|related articles|read more|follow us|sign up|subscribe)\b"
    r"|all rights reserved|^copyright\b|^©|^\(?(?:editing|reporting|edited|writing) by\b",
    re.IGNORECASE,
)
_EDGE_MAX_CHARS = 80


def _is_edge_furniture(block: Block) -> bool:
    return len(block.text) <= _EDGE_MAX_CHARS and _EDGE_LINE.search(block.text) is not None


def trim_edges(blocks: list[Block]) -> tuple[list[Block], list[Block]]:
    """The article without the furniture lines at its start and end, and those lines."""
    start, end = 0, len(blocks)
    while start < end and not blocks[start].heading and _is_edge_furniture(blocks[start]):
        start += 1
    while end > start and _is_edge_furniture(blocks[end - 1]):
        end -= 1
    return blocks[start:end], blocks[:start] + blocks[end:]


def extract_article(root: etree._Element, url: str | None = None) -> Article | None:
    """The article trafilatura finds in ``root`` (left untouched), or None when it finds none."""
    import trafilatura

    # trafilatura logs every page it judges too short or discards at WARNING: our reader says what happened.
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    document = trafilatura.bare_extraction(
        copy.deepcopy(root),
        url=url,
        include_comments=False,
        include_tables=True,
        include_images=False,
        with_metadata=True,
        favor_recall=True,
    )
    if document is None or isinstance(document, dict) or document.body is None:
        return None
    blocks = _blocks(document.body)
    if not blocks:
        return None

    def clean(value: object) -> str | None:
        return normalize_paragraph(value) or None if isinstance(value, str) else None

    return Article(
        blocks=tuple(blocks),
        title=clean(document.title),
        author=clean(document.author),
        site=clean(document.sitename),
        date=clean(document.date),
        description=clean(document.description),
        url=clean(document.url),
    )
