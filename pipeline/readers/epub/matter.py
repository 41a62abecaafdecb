"""Front and back matter: what in a book is not the story (cover, title page, contents, copyright, colophon,
endnotes, Project Gutenberg's header and licence), told from structure (epub:type, landmarks, guide), marks,
and titles."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace

from pipeline.readers.epub.package import Item
from pipeline.readers.htmltext import NOTE_MARKS, Block, Extracted
from pipeline.textfacts import GUTENBERG_END, GUTENBERG_START

# Structural names (epub:type, guide type, landmark) -> how the plan reports the skipped item.
MATTER_TYPES = {
    "cover": "cover",
    "titlepage": "title page",
    "title-page": "title page",
    "halftitlepage": "title page",
    "toc": "table of contents",
    "doc-toc": "table of contents",
    "loi": "table of contents",
    "lot": "table of contents",
    "copyright-page": "copyright",
    "copyright": "copyright",
    "colophon": "colophon",
    "imprint": "colophon",
    "imprimatur": "colophon",
    "index": "index",
    "license": "licence",
    "licence": "licence",
} | dict.fromkeys(NOTE_MARKS, "notes")
_TITLE_KINDS = (
    (
        re.compile(
            r"^(table of contents|contents|toc|inhalt|inhaltsverzeichnis|table des matieres|sommaire|indice"
            r"|目录|目錄|目次)$"
        ),
        "table of contents",
    ),
    (re.compile(r"^(cover|cover page|cover image|front cover|封面)$"), "cover"),
    (re.compile(r"^(title page|titlepage|half title|half title page|扉页|書名頁)$"), "title page"),
    (
        re.compile(r"^(copyright|copyright page|copyright notice|legal notice|版权|版权页|版權頁)$"),
        "copyright",
    ),
    (re.compile(r"^(colophon|imprint)$"), "colophon"),
    (re.compile(r"^(notes|endnotes|end notes|footnotes|注释|注釋|註釋|尾注|注解)$"), "notes"),
    (re.compile(r"project gutenberg.*licen[cs]e|^(the )?(full )?licen[cs]e( agreement)?$"), "licence"),
)
PG_HEADER, PG_FOOTER = "gutenberg-header", "gutenberg-footer"
_TITLE_PAGE_MAX_CHARS = 500
_BY_LINE = re.compile(r"^(by|written by|von|par|di|por)\s+\S", re.IGNORECASE)


@dataclass
class Doc:
    """One document of the reading order, its text as blocks."""

    item: Item
    content: Extracted
    body_names: set[str]  # class and id tokens of <body>


@dataclass
class Candidate:
    """A stretch of the reading order that is a chapter, unless it turns out to be front or back matter."""

    title: str | None
    doc: int
    fragment: str | None
    blocks: list[Block] = field(default_factory=list)
    forced_kind: str | None = None


def title_key(text: str) -> str:
    """Compare titles by letters and digits only: "Alice's" == "Alice’s", "CHAPTER I." == "chapter i"."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def mark_gutenberg(docs: list[Doc]) -> None:
    """Older Gutenberg EPUBs have no pg-header/pg-footer markup, only the START/END lines: mark what lies
    up to the first and from the second as boilerplate."""
    flat = [(doc, i) for doc in docs for i in range(len(doc.content.blocks))]
    texts = [doc.content.blocks[i].text for doc, i in flat]
    start = next((n for n, text in enumerate(texts) if GUTENBERG_START.match(text)), -1)
    end = next((n for n in range(start + 1, len(texts)) if GUTENBERG_END.match(texts[n])), len(texts))
    if start < 0 and end == len(texts):
        return
    new_blocks = {id(doc): list(doc.content.blocks) for doc in docs}
    for n, (doc, i) in enumerate(flat):
        if n <= start or n >= end:
            block = new_blocks[id(doc)][i]
            new_blocks[id(doc)][i] = replace(block, marks=block.marks | {PG_HEADER if n <= start else PG_FOOTER})
    for doc in docs:
        doc.content = replace(doc.content, blocks=tuple(new_blocks[id(doc)]))


def _kind_from_marks(blocks: list[Block]) -> str | None:
    chars = sum(len(b.text) for b in blocks)
    if not chars:
        return None
    # Only wholly-Gutenberg stretches are named after it; mixed ones lose their Gutenberg lines later.
    pg = [b for b in blocks if b.marks & {PG_HEADER, PG_FOOTER}]
    if len(pg) == len(blocks):
        return "licence" if any(PG_FOOTER in b.marks for b in pg) else "Project Gutenberg header"
    counts: dict[str, int] = {}
    for block in blocks:
        # Once per kind: a note carries several marks of one kind (endnotes, doc-endnotes, endnote).
        for kind in {MATTER_TYPES[mark] for mark in block.marks if mark in MATTER_TYPES}:
            counts[kind] = counts.get(kind, 0) + len(block.text)
    best = max(counts.items(), key=lambda kv: kv[1], default=None)
    return best[0] if best and best[1] * 2 > chars else None


def _kind_from_title(title: str | None) -> str | None:
    plain = _plain(title or "")
    return next((kind for pattern, kind in _TITLE_KINDS if pattern.search(plain)), None)


def doc_title(doc: Doc) -> str | None:
    title = (doc.content.title or "").strip("\"'“”‘’ ")
    return title or None


def uncovered_kind(doc: Doc, structural: dict[tuple[str, str | None], str], nav_path: str | None) -> str | None:
    """Whether a spine document the TOC does not mention is front/back matter of its own."""
    item = doc.item
    if item.path == nav_path:
        return "table of contents"
    if (item.path, None) in structural:
        return structural[(item.path, None)]
    blocks = list(doc.content.blocks)
    if not blocks:
        names = doc.body_names | {item.id.lower(), posixpath.basename(item.path).lower()}
        return "cover" if any("cover" in n for n in names) or "svg" in item.properties else None
    return _kind_from_marks(blocks) or _kind_from_title(doc_title(doc))


def strip_title_headings(blocks: list[Block], title: str) -> list[Block]:
    """The title is spoken separately: drop the leading headings that repeat it (possibly split in two, as in
    ``<h2>CHAPTER I.</h2><h3>Down the Rabbit-Hole</h3>``)."""
    remaining = title_key(title)
    whole = remaining
    n = 0
    while n < len(blocks) and remaining:
        key = title_key(blocks[n].text)
        if not blocks[n].heading and key != whole:
            break  # a plain paragraph goes only when it is the whole title (<p class="chapter-title">)
        if key and remaining.startswith(key):
            remaining = remaining[len(key) :]
        elif key != whole:
            break
        n += 1
    return blocks[n:]


def classify(
    cand: Candidate,
    docs: list[Doc],
    structural: dict[tuple[str, str | None], str],
    nav_path: str | None,
    book_title: str | None,
    authors: list[str],
    *,
    front: bool,
    is_last: bool,
) -> str | None:
    """The kind of front/back matter ``cand`` is, or None for a chapter. ``front``: no chapter with text has
    been kept before it."""
    if cand.forced_kind:
        return cand.forced_kind
    path = docs[cand.doc].item.path
    if (path, cand.fragment) in structural:
        return structural[(path, cand.fragment)]
    if cand.fragment is None and (path, None) in structural:
        return structural[(path, None)]
    if path == nav_path:
        return "table of contents"
    kind = _kind_from_marks(cand.blocks) or _kind_from_title(cand.title)
    if kind:
        return kind
    # An entry named like the book before the story starts, with only its author under it ("by Lewis
    # Carroll"), is the title page. Later, or without that evidence, it is a chapter that shares the name.
    title = cand.title or ""
    if front and not is_last and title_key(title) and title_key(title) == title_key(book_title or ""):
        return "title page" if _names_the_author(strip_title_headings(cand.blocks, title), authors) else None
    return None


def _names_the_author(body: list[Block], authors: list[str]) -> bool:
    """Whether the few lines under a title are a title page's: nothing at all, a "by ..." line, or the
    author's name."""
    if sum(len(b.text) for b in body) >= _TITLE_PAGE_MAX_CHARS:
        return False
    if not body or any(_BY_LINE.match(b.text) for b in body):
        return True
    text = title_key(" ".join(b.text for b in body))
    return any(title_key(author) and title_key(author) in text for author in authors)
