"""EPUB 2 and 3 reader: spine order, chapters from the nav document or the NCX, front/back matter left out
(endnotes too, whether in a section of their own or at the end of a chapter's file).

We parse the container, OPF, nav and NCX ourselves (lxml, entities/DTD/network off) instead of going through
ebooklib: every byte we read passes one size-capped zip reader, every XML document one hardened parser, and we
need details ebooklib exposes unevenly (linear spine items, guide and landmarks, fragment anchors, epub:type).

Hostile input fails fast with one ``InputError`` line: not a zip, zip bombs (declared sizes and ratios checked
before anything is decompressed, and actual reads capped), member names that climb out of the archive, DRM,
entity declarations in any XML document, a missing container or package document, no readable text.

    safezip.py   the archive          package.py   container, OPF, cover
    toc.py       nav document, NCX    matter.py    front and back matter
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book, Chapter
from pipeline.readers.epub.matter import (
    MATTER_TYPES,
    PG_FOOTER,
    PG_HEADER,
    Candidate,
    Doc,
    classify,
    doc_title,
    mark_gutenberg,
    strip_title_headings,
    title_key,
    uncovered_kind,
)
from pipeline.readers.epub.package import (
    CONTENT_TYPES,
    Item,
    check_drm,
    cover_of,
    descendants,
    parse_package,
    rootfile,
    tokens,
)
from pipeline.readers.epub.safezip import SafeZip
from pipeline.readers.epub.toc import TocEntry, chapter_entries, read_nav, read_ncx
from pipeline.readers.htmltext import NOTE_MARKS, extract_blocks, parse_markup

log = logging.getLogger("audiobook")


def _build_candidates(docs: list[Doc], starts: list[TocEntry], structural, nav_path) -> list[Candidate]:
    by_path = {doc.item.path: n for n, doc in enumerate(docs)}
    positioned: dict[int, list[tuple[int, int, TocEntry]]] = {}
    for order, entry in enumerate(starts):
        d = by_path.get(entry.path or "")
        if d is None:
            continue  # points outside the reading order
        anchors = docs[d].content.anchors
        block = anchors.get(entry.fragment, 0) if entry.fragment else 0
        positioned.setdefault(d, []).append((block, order, entry))

    candidates: list[Candidate] = []
    if not positioned:
        # No usable table of contents: every document in the reading order is a chapter.
        for d, doc in enumerate(docs):
            kind = uncovered_kind(doc, structural, nav_path)
            candidates.append(Candidate(None, d, None, list(doc.content.blocks), kind))
        return candidates
    current: Candidate | None = None  # the chapter that uncovered text attaches to
    for d, doc in enumerate(docs):
        blocks = list(doc.content.blocks)
        here = sorted(positioned.get(d, []), key=lambda t: (t[0], t[1]))
        if not here:
            kind = uncovered_kind(doc, structural, nav_path)
            if kind or current is None:
                cand = Candidate(None, d, None, blocks, kind)
                candidates.append(cand)
                if kind is None:
                    current = cand
            else:
                current.blocks.extend(blocks)
            continue
        prefix = blocks[: here[0][0]]
        if prefix:
            if current is None:
                current = Candidate(None, d, None, [])
                candidates.append(current)
            current.blocks.extend(prefix)
        for n, (block, _order, entry) in enumerate(here):
            stop = here[n + 1][0] if n + 1 < len(here) else len(blocks)
            current = Candidate(entry.title or None, d, entry.fragment, blocks[block:stop])
            candidates.append(current)
    return candidates


def _load_docs(zf: SafeZip, spine: list[Item], gaps: list[str]) -> list[Doc]:
    """The spine's content documents, parsed. A document the archive lacks is added to ``gaps``: its text is
    lost, and the listener must hear of it from the plan, not find a chapter missing."""
    docs = []
    for item in spine:
        if item.media_type not in CONTENT_TYPES:
            continue  # images in the spine carry no text
        if zf.resolve(item.path) is None:
            gaps.append(f"{item.path} (listed in the reading order but missing from the archive)")
            continue
        root = parse_markup(zf.read(item.path), f"{zf.label}: {item.path}")
        body = next(iter(descendants(root, "body")), None)
        names = set()
        if body is not None:
            names = tokens(body.get("class")) | tokens(body.get("id"))
        docs.append(Doc(item, extract_blocks(root, f"{zf.label}: {item.path}"), names))
    return docs


def read_epub(path: Path, *, include_matter: bool = False) -> Book:
    """Read an EPUB 2 or 3 file into a ``Book``. Front/back matter (cover, title page, contents, licence,
    copyright, colophon, endnotes) is left out and named in ``Book.skipped`` unless ``include_matter`` is true."""
    zf = SafeZip(path)
    try:
        check_drm(zf)
        opf_path = rootfile(zf)
        pkg = parse_package(zf, opf_path)
        toc: list[TocEntry] = []
        structural: dict[tuple[str, str | None], str] = {}
        nav_path = pkg.nav_item.path if pkg.nav_item and zf.resolve(pkg.nav_item.path) else None
        if nav_path and pkg.nav_item:
            toc, landmarks = read_nav(zf, pkg.nav_item)
            for kind, target, fragment in landmarks:
                if kind in MATTER_TYPES:
                    structural[(target, fragment)] = MATTER_TYPES[kind]
        if not toc and pkg.toc_item and zf.resolve(pkg.toc_item.path):
            toc = read_ncx(zf, pkg.toc_item)
        for kind, target, fragment in pkg.guide:
            if kind in MATTER_TYPES:
                structural.setdefault((target, fragment), MATTER_TYPES[kind])
        gaps = list(pkg.spine_gaps)
        docs = _load_docs(zf, pkg.spine, gaps)
        cover, cover_mime = cover_of(zf, pkg)
    finally:
        zf.close()
    for gap in gaps:
        log.warning("%s: left out %s", path.name, gap)
    if not docs:
        hint = f" ({'; '.join(gaps)})" if gaps else ""
        raise InputError(f"{path.name}: the EPUB's reading order (spine) holds no readable documents{hint}")

    mark_gutenberg(docs)
    candidates = _build_candidates(docs, chapter_entries(toc), structural, nav_path)
    chapters: list[Chapter] = []
    skipped: list[str] = []
    notices: list[str] = []  # Gutenberg lines cut from a kept chapter; reported unless the licence already is
    story_started = False  # a chapter with text has been kept: no title page after it
    for n, cand in enumerate(candidates):
        doc = docs[cand.doc]
        found = cand.title or next((b.text for b in cand.blocks if b.heading), None) or doc_title(doc)
        matter = classify(
            cand,
            docs,
            structural,
            nav_path,
            pkg.title,
            pkg.authors,
            front=not story_started,
            is_last=n == len(candidates) - 1,
        )
        if matter and not include_matter:
            skipped.append(f"{found or matter.capitalize()} ({matter})")
            continue
        title = found or f"Chapter {len(chapters) + 1}"
        if not cand.title and pkg.title and title_key(title) == title_key(pkg.title):
            title = f"Chapter {len(chapters) + 1}"  # every file's <title> is the book's: say where we are
        blocks = strip_title_headings(cand.blocks, title)
        if not include_matter:
            kept = [b for b in blocks if not b.marks & {PG_HEADER, PG_FOOTER}]
            if len(kept) < len(blocks):
                notices.append(f"Project Gutenberg notice in {title} (licence)")
            # Endnotes at the end of a chapter's own file are back matter too.
            text = [b for b in kept if not b.marks & NOTE_MARKS]
            if len(text) < len(kept):
                skipped.append(f"Notes in {title} (notes)")
            blocks = text
        if not blocks:
            if cand.title:
                skipped.append(f"{title} (no text)")
            continue
        chapters.append(Chapter(len(chapters) + 1, title, tuple(b.text for b in blocks)))
        story_started = story_started or matter is None

    if not any(s.endswith(("(licence)", "(Project Gutenberg header)")) for s in skipped):
        skipped.extend(notices)
    if not chapters:
        hint = f" (left out as front/back matter: {', '.join(skipped)})" if skipped else ""
        hint += f" (left out: {'; '.join(gaps)})" if gaps else ""
        raise InputError(f"{path.name}: the EPUB holds no readable text{hint}")
    return Book(
        title=pkg.title or path.stem,
        chapters=tuple(chapters),
        author=", ".join(pkg.authors) or None,
        language=pkg.language,
        cover=cover,
        cover_mime=cover_mime,
        source=path,
        skipped=(*gaps, *skipped),
        info=pkg.info,
    )
