"""FictionBook 2 (.fb2, and .fb2.zip holding one) -> ``Book``: sections and their titles make the chapters,
the bodies of notes and comments are left out with the note references in the text, the cover comes from
its <binary>, and <description> gives the title, authors, language, annotation, genres, series and publisher.

Nesting: a section that holds titled sections is a part, and the sections under it are its chapters, each
naming its part (``Chapter.part``); text a part holds before its first section (an epigraph, an introduction)
is a chapter under the part's own title. Sections whose titles are only a number or a mark ("2", "* * *"), or
that have none, are scenes of the chapter around them, read in it.

The file is XML read by the hardened parser (``htmltext.parse_xml``: no entities, no DTD, no network,
libxml2's limits on), at most ``MAX_FB2_BYTES``; a zipped one passes the same zip checks as an EPUB.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.readers.htmltext import parse_xml
from pipeline.readers.sniff import read_head
from pipeline.textfacts import normalize_paragraph, primary_language

MB = 1024 * 1024
MAX_FB2_BYTES = 100 * MB  # text is a few MB; inline base64 images make the rest
MAX_COVER_BYTES = 20 * MB
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"

# Elements whose text is spoken as paragraphs of their own; "v" is a line of verse, "text-author" signs a
# quotation or epigraph.
_PARAGRAPHS = frozenset({"p", "v", "subtitle", "text-author"})
# Containers of paragraphs, read in order.
_CONTAINERS = frozenset({"epigraph", "cite", "poem", "stanza", "annotation"})
_NOTE_BODIES = frozenset({"notes", "comments", "footnotes"})


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _child(el: etree._Element | None, name: str) -> etree._Element | None:
    if el is None:
        return None
    return next((c for c in el if _local(c) == name), None)


def _children(el: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if el is None else [c for c in el if _local(c) == name]


def _is_note_ref(el: etree._Element) -> bool:
    """<a type="note" l:href="#n1">1</a>, or a link to a fragment holding only a marker ("[1]", "*")."""
    if _local(el) != "a":
        return False
    if (el.get("type") or "").lower() == "note":
        return True
    text = "".join(el.itertext()).strip()
    return (el.get(XLINK_HREF) or "").startswith("#") and len(text) <= 8 and not any(c.isalpha() for c in text)


def _text(el: etree._Element) -> str:
    """The element's text without note references (their tails stay): one paragraph, normalized."""
    parts: list[str] = []

    def walk(node: etree._Element) -> None:
        parts.append(node.text or "")
        for child in node:
            if isinstance(child.tag, str) and not _is_note_ref(child) and _local(child) != "image":
                walk(child)
            parts.append(child.tail or "")

    walk(el)
    return normalize_paragraph("".join(parts))


def _paragraphs(elements: Iterable[etree._Element], out: list[str]) -> None:
    """Every speakable paragraph in ``elements`` (a section's children, an epigraph's ...), in order."""
    for child in elements:
        name = _local(child)
        if name in _PARAGRAPHS:
            text = _text(child)
            if any(c.isalnum() for c in text):
                out.append(text)
        elif name in _CONTAINERS or name == "title":  # a poem's or stanza's title is read as a line
            _paragraphs(child, out)
        elif name == "table":
            for row in child.iter("{*}tr"):
                text = normalize_paragraph(" ".join(_text(cell) for cell in row if isinstance(cell.tag, str)))
                if any(c.isalnum() for c in text):
                    out.append(text)


def _title(section: etree._Element) -> str | None:
    title = _child(section, "title")
    if title is None:
        return None
    lines = [_text(p) for p in title if _local(p) == "p"] or [_text(title)]
    lines = [line for line in lines if line]
    # "Глава 1" / "Начало" on two lines: said as one title.
    return ". ".join(line.rstrip(".") for line in lines) if lines else None


def _is_scene(section: etree._Element) -> bool:
    """A section that is a scene of its chapter rather than a chapter: no sections inside, and a title that
    says nothing but a number or a mark."""
    if _children(section, "section"):
        return False
    title = _title(section)
    return title is None or not any(c.isalpha() for c in title)


def _chapter_text(el: etree._Element, out: list[str]) -> None:
    """A chapter's paragraphs in order, its scenes' included (their number-only titles are not read)."""
    for child in el:
        if _local(child) == "section":
            _chapter_text(child, out)
        elif _local(child) != "title":
            _paragraphs([child], out)


@dataclass
class _Walk:
    chapters: list[Chapter] = field(default_factory=list)

    def add(self, title: str | None, paragraphs: list[str], part: str | None) -> None:
        if paragraphs:
            n = len(self.chapters) + 1
            self.chapters.append(Chapter(n, title or f"Chapter {n}", tuple(paragraphs), part))

    def section(self, el: etree._Element, part: str | None) -> None:
        title = _title(el)
        subsections = _children(el, "section")
        if all(_is_scene(sub) for sub in subsections):
            # A chapter, its sections (if any) scenes inside it: "1", "2", "* * *" or no title at all.
            text: list[str] = []
            _chapter_text(el, text)
            self.add(title, text, part)
            return
        # A part: what it says before its first section is a chapter of its own, then its sections; text
        # between its sections (rare) joins the chapter before it.
        own = " / ".join(p for p in (part, title) if p) or None
        run: list[etree._Element] = []
        lead = True
        for child in [*el, None]:
            if child is not None and _local(child) != "section":
                if _local(child) != "title":
                    run.append(child)
                continue
            between: list[str] = []
            _paragraphs(run, between)
            if lead:
                self.add(title or part, between, part)
            elif between:
                last = self.chapters[-1]
                self.chapters[-1] = dataclasses.replace(last, paragraphs=(*last.paragraphs, *between))
            run, lead = [], False
            if child is not None:
                self.section(child, own)


def _person(el: etree._Element) -> str | None:
    names = [_text(c) for c in el if _local(c) in ("first-name", "middle-name", "last-name")]
    name = " ".join(n for n in names if n) or _text(_child(el, "nickname") or etree.Element("x"))
    return name or None


def _load(path: Path) -> bytes:
    if read_head(path, 4) == b"PK\x03\x04":
        from pipeline.readers.epub.safezip import SafeZip

        zf = SafeZip(path, kind="FB2")
        try:
            books = [n for n in zf.names() if n.lower().endswith(".fb2")]
            if len(books) != 1:
                raise InputError(f"{path.name}: the zip holds {len(books)} .fb2 files, not one; unpack it first")
            return zf.read(books[0], MAX_FB2_BYTES)
        finally:
            zf.close()
    size = path.stat().st_size
    if size > MAX_FB2_BYTES:
        raise InputError(f"{path.name}: {size // MB} MB is too large for an FB2 book (limit {MAX_FB2_BYTES // MB} MB)")
    return path.read_bytes()


def _cover(root: etree._Element, title_info: etree._Element | None, where: str) -> tuple[bytes | None, str | None]:
    image = next((i for i in _children(_child(title_info, "coverpage"), "image")), None)
    href = (image.get(XLINK_HREF) or image.get("href") or "") if image is not None else ""
    if not href.startswith("#"):
        return None, None
    binary = next((b for b in _children(root, "binary") if b.get("id") == href[1:]), None)
    if binary is None or len(binary.text or "") > MAX_COVER_BYTES * 4 // 3 + 4096:
        return None, None
    try:
        data = base64.b64decode("".join((binary.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None, None  # a broken cover is not worth failing the book over
    if data.startswith(b"\xff\xd8\xff"):
        return data, "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data, "image/png"
    return None, None


_COVER_REF = re.compile(rb"<(?:\w+:)?coverpage\b.*?href\s*=\s*[\"']#([^\"']+)", re.DOTALL)
_BINARY = re.compile(rb"<(?:\w+:)?binary\b([^>]*)>[^<]*</(?:\w+:)?binary\s*>")
_ID = re.compile(rb"""\bid\s*=\s*["']([^"']*)["']""")


def _without_pictures(data: bytes) -> bytes:
    """The book without its pictures but the cover: base64 <binary> elements are most of an illustrated FB2's
    bytes, never read, and one over libxml2's 10 MB per text node would have the whole book refused."""
    cover = _COVER_REF.search(data[: 1024 * 1024])
    keep = cover.group(1) if cover else None

    def drop(found: re.Match[bytes]) -> bytes:
        ident = _ID.search(found.group(1))
        return found.group(0) if ident is not None and ident.group(1) == keep else b""

    return _BINARY.sub(drop, data)


def read_fb2(path: Path) -> Book:
    """Read a FictionBook 2 file (or a zip holding one). Raises InputError, one line, when it cannot."""
    where = path.name
    root = parse_xml(_without_pictures(_load(path)), where)
    if _local(root) != "FictionBook":
        raise InputError(f"{where}: not an FB2 book (its root element is <{_local(root)}>, not <FictionBook>)")
    description = _child(root, "description")
    title_info = _child(description, "title-info")
    publish_info = _child(description, "publish-info")

    walk = _Walk()
    skipped: list[str] = []
    for body in _children(root, "body"):
        name = (body.get("name") or "").lower()
        if name in _NOTE_BODIES:
            notes = len(_children(body, "section"))
            skipped.append(f"{name.capitalize()} ({notes} {'note' if notes == 1 else 'notes'}; not read)")
            continue
        lead: list[str] = []
        _paragraphs((c for c in body if _local(c) in _CONTAINERS), lead)  # the body's own epigraph
        walk.add(_title(body), lead, None)
        for section in _children(body, "section"):
            walk.section(section, None)
    if not walk.chapters:
        raise InputError(f"{where}: the FB2 book holds no readable text")

    def info_text(parent: etree._Element | None, tag: str) -> str | None:
        el = _child(parent, tag)
        return (_text(el) or None) if el is not None else None

    authors = [a for a in map(_person, _children(title_info, "author")) if a]
    annotation = _child(title_info, "annotation")
    described: list[str] = []
    if annotation is not None:
        _paragraphs(annotation, described)
    sequence = _child(title_info, "sequence")
    date_el = _child(title_info, "date")
    date = info_text(publish_info, "year") or (
        (date_el.get("value") or _text(date_el) or None) if date_el is not None else None
    )
    cover, cover_mime = _cover(root, title_info, where)
    info = BookInfo(
        description="\n\n".join(described) or None,
        publisher=info_text(publish_info, "publisher"),
        date=date,
        subjects=tuple(s for s in (_text(g) for g in _children(title_info, "genre")) if s),
        series=(sequence.get("name") or None) if sequence is not None else None,
        series_index=(sequence.get("number") or None) if sequence is not None else None,
        isbn=info_text(publish_info, "isbn"),
    )
    return Book(
        title=info_text(title_info, "book-title") or path.name.split(".")[0],
        chapters=tuple(walk.chapters),
        author=", ".join(authors) or None,
        language=primary_language(info_text(title_info, "lang")),
        cover=cover,
        cover_mime=cover_mime,
        source=path,
        skipped=tuple(skipped),
        info=info,
    )
