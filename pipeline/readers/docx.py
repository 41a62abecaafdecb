"""Word documents (.docx) -> ``Book``: the body's paragraphs in order, chapters at its headings (Heading 1 and
2, or the styles based on them, or paragraphs with an outline level), the core properties (title, creator,
language, subject, keywords, description, date) into the book.

Never read: footnotes, endnotes and comments (their parts are not opened; the marks that refer to them are
skipped), deleted revisions, hidden text, field codes, and the fallback copy Word keeps of every text box
(``mc:Fallback``), which would say its text twice.

We read the XML ourselves: every member passes the zip checks the EPUB reader uses (bombs, climbing names,
sizes), every XML part the hardened parser (no entities, no DTD, no network).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from lxml import etree

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.readers.epub.safezip import SafeZip
from pipeline.readers.htmltext import parse_xml
from pipeline.textfacts import normalize_paragraph, primary_language

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_OFFICE_DOCUMENT = "/officeDocument"
_HEADING_NAME = re.compile(r"heading\s*(\d)$", re.IGNORECASE)
# Inside a paragraph: never spoken.
_SKIP = frozenset(
    {
        f"{W}del",  # a deleted revision
        f"{W}delText",
        f"{W}instrText",  # field codes: PAGE, TOC \o "1-3", HYPERLINK "..."
        f"{W}footnoteReference",
        f"{W}endnoteReference",
        f"{W}commentReference",
        f"{W}annotationRef",
        f"{W}pPr",
        f"{W}rPr",
        f"{MC}Fallback",  # the second copy of a text box or drawing
    }
)
TITLE = 0  # heading "level" of the Title style


_TOC_NAME = re.compile(r"toc\s*\d|table of contents|toc heading", re.IGNORECASE)
TOC = -1  # "level" of a table of contents entry: never read


def _styles(zf: SafeZip, path: str | None) -> dict[str, int]:
    """Style id -> heading level (0 for Title, 1.. for headings, ``TOC`` for contents entries), following
    ``basedOn`` a few steps."""
    if path is None or zf.resolve(path) is None:
        return {}
    root = parse_xml(zf.read(path), f"{zf.label}: {path}")
    own: dict[str, int | None] = {}
    based: dict[str, str] = {}
    for style in root.iter(f"{W}style"):
        if style.get(f"{W}type") not in (None, "paragraph"):
            continue
        sid = style.get(f"{W}styleId") or ""
        name_el = style.find(f"{W}name")
        name = (name_el.get(f"{W}val") or "") if name_el is not None else ""
        outline = style.find(f"{W}pPr/{W}outlineLvl")
        level: int | None = None
        if name.strip().lower() == "title":
            level = TITLE
        elif _TOC_NAME.fullmatch(name.strip()):
            level = TOC
        elif found := _HEADING_NAME.match(name.strip()):
            level = int(found.group(1))
        elif outline is not None and (outline.get(f"{W}val") or "").isdigit() and int(outline.get(f"{W}val")) < 9:
            level = int(outline.get(f"{W}val")) + 1
        own[sid] = level
        parent = style.find(f"{W}basedOn")
        if parent is not None and parent.get(f"{W}val"):
            based[sid] = parent.get(f"{W}val") or ""
    levels: dict[str, int] = {}
    for sid in own:
        cur: str | None = sid
        for _ in range(10):  # basedOn chains are short; a loop must not hang us
            level = own.get(cur) if cur is not None else None
            if level is not None:
                levels[sid] = level
                break
            cur = based.get(cur) if cur is not None else None
    return levels


def _paragraph(p: etree._Element) -> str:
    """A paragraph's text, without what is never spoken (``_SKIP``, hidden runs)."""
    parts: list[str] = []
    stack = [iter(p)]
    while stack:
        el = next(stack[-1], None)
        if el is None:
            stack.pop()
            continue
        if not isinstance(el.tag, str) or el.tag in _SKIP:
            continue
        tag = el.tag
        if tag == f"{W}r":
            vanish = el.find(f"{W}rPr/{W}vanish")
            if vanish is not None and vanish.get(f"{W}val", "true") not in ("0", "false"):
                continue  # hidden text
        if tag == f"{W}t":
            parts.append(el.text or "")
        elif tag in (f"{W}tab", f"{W}cr", f"{W}br"):  # a line, column or page break inside a paragraph
            parts.append(" ")
        elif tag == f"{W}noBreakHyphen":
            parts.append("-")
        elif tag == f"{W}p":  # a paragraph inside a text box: its own line
            parts.append(" ")
            stack.append(iter(el))
            continue
        else:
            stack.append(iter(el))
    return normalize_paragraph("".join(parts))


def _level(p: etree._Element, styles: dict[str, int]) -> int | None:
    ppr = p.find(f"{W}pPr")
    if ppr is None:
        return None
    outline = ppr.find(f"{W}outlineLvl")
    style = ppr.find(f"{W}pStyle")
    if style is not None and (style.get(f"{W}val") or "") in styles:
        return styles[style.get(f"{W}val") or ""]
    val = outline.get(f"{W}val") if outline is not None else None
    if val and val.isdigit() and int(val) < 9:
        return int(val) + 1
    return None


def _is_contents(sdt: etree._Element) -> bool:
    gallery = sdt.find(f"{W}sdtPr/{W}docPartObj/{W}docPartGallery")
    return gallery is not None and (gallery.get(f"{W}val") or "").lower().startswith("table of contents")


def _blocks(body: etree._Element, styles: dict[str, int], include_matter: bool) -> list[tuple[str, int | None]]:
    """(text, heading level or None) for every paragraph of the body in order, tables' cells included."""
    out: list[tuple[str, int | None]] = []
    stack = [iter(body)]
    while stack:
        el = next(stack[-1], None)
        if el is None:
            stack.pop()
            continue
        if not isinstance(el.tag, str) or el.tag in _SKIP or el.tag == f"{W}sectPr":
            continue
        if el.tag == f"{W}sdt" and _is_contents(el) and not include_matter:
            out.append(("", TOC))  # Word's table of contents: page numbers and titles said again
            continue
        if el.tag == f"{W}p":
            text = _paragraph(el)
            level = _level(el, styles)
            if level == TOC and not include_matter:
                out.append(("", TOC))
            elif level == TOC:
                out.append((text, None))
            elif any(c.isalnum() for c in text):
                out.append((text, level))
        else:  # tables, rows, cells, content controls (w:sdt), custom XML: their paragraphs in order
            stack.append(iter(el))
    return out


def _chapters(blocks: list[tuple[str, int | None]], title: str) -> tuple[list[Chapter], str | None]:
    """Chapters at Heading 1 and 2 (contents entries left out): with both, a Heading 1 names the part its
    Heading 2 chapters belong to (and its own text before them is a chapter); with one of them, each starts a
    chapter. Deeper headings are read as lines of the chapter. Returns the chapters and the Title's text."""
    doc_title = next((t for t, lv in blocks if lv == TITLE), None)
    blocks = [(t, lv) for t, lv in blocks if lv not in (TITLE, TOC)]
    used = sorted({lv for _, lv in blocks if lv in (1, 2)})
    chapters: list[Chapter] = []
    current: tuple[str, list[str], str | None] = (doc_title or title, [], None)
    part: str | None = None

    def close() -> None:
        name, paragraphs, in_part = current
        if paragraphs:
            chapters.append(Chapter(len(chapters) + 1, name, tuple(paragraphs), in_part))

    for text, level in blocks:
        if level in used:
            close()
            if len(used) == 2 and level == used[0]:
                part = text
                current = (text, [], None)
            else:
                current = (text, [], part)
        else:
            current[1].append(text)
    close()
    return chapters, doc_title


def _core(zf: SafeZip) -> dict[str, str]:
    if zf.resolve("docProps/core.xml") is None:
        return {}
    root = parse_xml(zf.read("docProps/core.xml"), f"{zf.label}: docProps/core.xml")
    found: dict[str, str] = {}
    for el in root:
        if isinstance(el.tag, str):
            text = normalize_paragraph("".join(el.itertext()))
            if text:
                found.setdefault(etree.QName(el).localname, text)
    return found


def _main_part(zf: SafeZip) -> str:
    """The main document part, as the package's relationships name it (nearly always word/document.xml)."""
    if zf.resolve("_rels/.rels") is not None:
        rels = parse_xml(zf.read("_rels/.rels"), f"{zf.label}: _rels/.rels")
        for rel in rels.iter(_REL):
            if (rel.get("Type") or "").endswith(_OFFICE_DOCUMENT):
                target = posixpath.normpath((rel.get("Target") or "").lstrip("/"))
                if target and not target.startswith(".."):
                    return target
    return "word/document.xml"


def read_docx(path: Path, *, include_matter: bool = False) -> Book:
    """Read a .docx into a ``Book``; ``include_matter`` reads its table of contents too. Raises InputError, one
    line, for what cannot be read."""
    zf = SafeZip(path, kind="DOCX")
    try:
        main = _main_part(zf)
        if zf.resolve(main) is None:
            raise InputError(f"{path.name}: not a Word document ({main} is missing)")
        styles = _styles(zf, posixpath.join(posixpath.dirname(main), "styles.xml"))
        root = parse_xml(zf.read(main), f"{zf.label}: {main}")
        core = _core(zf)
    finally:
        zf.close()
    body = root.find(f"{W}body")
    if body is None:
        raise InputError(f"{path.name}: the Word document has no body; the file is damaged")
    notes = {kind: sum(1 for _ in root.iter(f"{W}{kind}Reference")) for kind in ("footnote", "endnote", "comment")}
    blocks = _blocks(body, styles, include_matter)
    chapters, doc_title = _chapters(blocks, core.get("title") or path.stem)
    if not chapters:
        raise InputError(f"{path.name}: the Word document holds no readable text")
    skipped = ["Table of contents (contents)"] if any(lv == TOC for _, lv in blocks) else []
    skipped += [f"{n} {kind}{'s' if n > 1 else ''} (not read)" for kind, n in notes.items() if n]
    keywords = [k.strip() for k in re.split(r"[,;]", core.get("keywords", "")) if k.strip()]
    subjects = tuple(dict.fromkeys([*([core["subject"]] if "subject" in core else []), *keywords]))
    return Book(
        title=core.get("title") or doc_title or path.stem,
        chapters=tuple(chapters),
        author=core.get("creator"),
        language=primary_language(core.get("language")),
        source=path,
        skipped=tuple(skipped),
        info=BookInfo(
            description=core.get("description"), date=(core.get("created") or "")[:10] or None, subjects=subjects
        ),
    )
