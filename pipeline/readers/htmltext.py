"""(X)HTML -> speakable blocks, shared by the EPUB and HTML readers.

A document becomes a flat list of ``Block``s (paragraphs and headings) plus a map from element ids to the
index of the block they open, so a reader can cut chapters at ``#fragment`` anchors anywhere in a file. What a
listener should not hear is dropped here: scripts and styles, images, ruby annotations, page-number markers,
note references (``epub:type="noteref"``, superscript links, links styled as note references), pop-up
footnote bodies. Endnotes are kept but marked (``NOTE_MARKS``): the EPUB reader leaves them out as back matter.

Parsing is the caller's job (see ``parse_xml`` / ``parse_html``), done with entity resolution, DTD loading and
network access off, so a hostile document cannot read local files or expand entities.

A document is read whole or refused with one line that says why, never cut short. libxml2's limits stay on
(``huge_tree`` off): ``MAX_DEPTH`` levels of nesting and ``MAX_TEXT_MB`` per text node or attribute value.
Past them the XML parser fails and the recovering HTML parser stops where it is and returns the part it has,
with only an entry in its error log to say so; we read that log and refuse. ``huge_tree`` would lift every
hardening limit at once (for XML that includes the entity-amplification checks against memory bombs) to
admit documents no book needs: real books nest a few dozen levels at most.
"""

from __future__ import annotations

import html.entities
import re
from dataclasses import dataclass, field

from lxml import etree
from lxml import html as lxml_html

from pipeline.errors import InputError
from pipeline.readers.htmlscan import UNCLOSED, scan
from pipeline.textfacts import decode_bytes, normalize_paragraph

EPUB_NS = "http://www.idpf.org/2007/ops"
EPUB_TYPE = f"{{{EPUB_NS}}}type"

# Elements that start and end a paragraph. Everything else is inline and joins the paragraph around it.
_BLOCK = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hgroup",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# Never spoken: code, media, form controls, ruby readings (<rt>, <rp>) and the document head.
_DROP = frozenset(
    [
        "script",
        "style",
        "noscript",
        "template",
        "head",
        "title",
        "meta",
        "link",
        "rt",
        "rp",
        "img",
        "image",
        "svg",
        "math",
        "object",
        "embed",
        "iframe",
        "audio",
        "video",
        "canvas",
        "map",
        "area",
        "input",
        "select",
        "textarea",
        "button",
    ]
)
# epub:type / role values whose whole subtree is noise in audio: page numbers, note markers, pop-up notes.
_DROP_TYPES = frozenset(
    [
        "pagebreak",
        "doc-pagebreak",
        "noteref",
        "doc-noteref",
        "footnote",
        "doc-footnote",
        "doc-backlink",
        "backlink",
    ]
)
_DROP_CLASSES = frozenset({"pagenum", "page-number", "pagenumber", "pageno"})
# epub:type / role values of endnotes (a section of them, or one note), and class names publishers give them.
NOTE_MARKS = frozenset(
    ["endnotes", "endnote", "rearnotes", "rearnote", "doc-endnotes", "doc-endnote", "footnotes", "notes"]
)
_NOTE_CLASSES = frozenset({"footnotes", "endnotes"})
# Class or id words of a link that is a note reference: "footnote-ref", "fnref1", "noteref", "duokan-footnote".
_NOTE_LINK = re.compile(r"noteref|note-ref|fnref|footnote|endnote|fn\d", re.IGNORECASE)
# The text of a note reference: "1", "[12]", "*", "†", "注3", "iv".
_NOTE_TEXT = re.compile(r"[\[(（〔【]?\s*(?:\d{1,3}|[*†‡§]{1,3}|[ivx]{1,5}|注\s*\d{1,3}|註\s*\d{1,3})\s*[\])）〕】]?")
_MARKER_CHARS = 8  # the most text a note reference or page number holds: "[12]", "xiv", "注3"
# Project Gutenberg wraps its header and licence in these ids/classes.
_GUTENBERG_HEADER = frozenset({"pg-header", "pgheader"})
_GUTENBERG_FOOTER = frozenset({"pg-footer", "pgfooter"})
# Footnote markers left as plain text: "[1]", "[12]", "[*]".
_NOTE_MARK = re.compile(r"\s*\[(?:\d{1,3}|\*|†|‡)\]")
_ENTITY_DECL = re.compile(r"<!ENTITY", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""")
# Browsers read on after </body> and </html> (the content goes into the body); libxml2 drops all of it.
_DOCUMENT_END = re.compile(r"</(?:body|html)\s*>", re.IGNORECASE)

MAX_DEPTH = 256  # levels of elements libxml2 opens without XML_PARSE_HUGE
MAX_TEXT_MB = 10  # one text node or attribute value, likewise


@dataclass(frozen=True)
class Block:
    """One paragraph (``heading == 0``) or heading (``heading`` 1-6) of normalized text.

    ``marks`` holds the structural hints of the elements around it: epub:type and role values (``toc``,
    ``titlepage``, ``copyright-page`` ...) and ``gutenberg-header`` / ``gutenberg-footer``.
    """

    text: str
    heading: int = 0
    marks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Extracted:
    blocks: tuple[Block, ...]
    anchors: dict[str, int] = field(default_factory=dict)  # element id -> index of the block it opens
    title: str | None = None  # the document's <title>, when it has one


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def _tokens(value: str | None) -> set[str]:
    return set(value.lower().split()) if value else set()


def _marks_of(el: etree._Element) -> set[str]:
    marks = _tokens(el.get(EPUB_TYPE)) | _tokens(el.get("epub:type")) | _tokens(el.get("role"))
    names = _tokens(el.get("class")) | _tokens(el.get("id"))
    if names & _GUTENBERG_FOOTER:
        marks.add("gutenberg-footer")
    elif names & _GUTENBERG_HEADER:
        marks.add("gutenberg-header")
    if names & _NOTE_CLASSES:
        marks.add("endnotes")
    return marks


def _is_dropped(el: etree._Element, name: str, marks: set[str]) -> bool:
    if name in _DROP or marks & _DROP_TYPES or _tokens(el.get("class")) & _DROP_CLASSES:
        return True
    # A superscript that holds a link is a footnote marker ("word<sup><a href=#n1>1</a></sup>").
    if name == "sup":
        return any(_local(child.tag) == "a" for child in el.iter())
    return name == "a" and _is_note_link(el)


def is_marker(el: etree._Element) -> bool:
    """A note reference or page number: text that is never spoken, however the page is read."""
    marks = _marks_of(el)
    if marks & _DROP_TYPES or _tokens(el.get("class")) & _DROP_CLASSES:
        return True
    name = _local(el.tag)
    if name == "sup":
        return any(_local(child.tag) == "a" for child in el.iter())
    return name == "a" and _is_note_link(el)


def _is_note_link(el: etree._Element) -> bool:
    """A link that is a note reference: it holds a superscript, or is named like one, or points at a fragment
    with only a note number for text ("<a href='#n3'>3</a>") — and its text is that short."""
    text = "".join(el.itertext()).strip()
    if len(text) > _MARKER_CHARS:
        return False
    if any(_local(child.tag) == "sup" for child in el.iter()):
        return True
    names = f"{el.get('class') or ''} {el.get('id') or ''}"
    if _NOTE_LINK.search(names):
        return True
    return "#" in (el.get("href") or "") and _NOTE_TEXT.fullmatch(text) is not None


# Blocks that may hold paragraphs and text side by side ("<div>Text <p>More</p></div>").
_CONTAINERS = (
    _BLOCK
    - {"caption", "dl", "dt", "hgroup", "hr", "ol", "p", "pre", "summary", "table", "tbody"}
    - {"tfoot", "thead", "tr", "ul", *_HEADINGS}
)


def wrap_loose_text(root: etree._Element) -> None:
    """Put text that sits straight in a container, beside paragraphs, into paragraphs of its own, as the
    extractor reads it anyway. Content scorers such as readability count only elements, and left such text out
    of the article."""
    for el in list(root.iter(*_CONTAINERS)):
        if not any(_local(child.tag) in _BLOCK for child in el):
            continue
        items: list[etree._Element | str] = [el.text or ""]
        for child in el:
            items += [child, child.tail or ""]
            child.tail = None
        el.text = None
        for child in list(el):
            el.remove(child)
        run: list[etree._Element | str] = []
        for item in [*items, None]:
            if item is not None and not (isinstance(item, etree._Element) and _local(item.tag) in _BLOCK):
                run.append(item)
                continue
            if any(not isinstance(part, str) or part.strip() for part in run):
                para = etree.SubElement(el, "p")
                for part in run:
                    if isinstance(part, str):
                        last = para[-1] if len(para) else None
                        if last is None:
                            para.text = (para.text or "") + part
                        else:
                            last.tail = (last.tail or "") + part
                    else:
                        para.append(part)
            run = []
            if item is not None:
                el.append(item)


def refuse_hidden_text(el: etree._Element, where: str) -> None:
    """Before dropping ``el`` unread: when its start tag was never closed (``UNCLOSED``), everything up to its
    parent's end went into it. More text than a note or page marker holds, or a paragraph, is the document's
    text taken in by the missing end tag: refuse rather than leave it out."""
    line = el.get(UNCLOSED)
    if not line:
        return
    text = normalize_paragraph("".join(el.itertext()))
    holds_paragraph = any(
        _local(d.tag) in _BLOCK and any(c.isalnum() for c in "".join(d.itertext())) for d in el.iterdescendants()
    )
    if len(text) > _MARKER_CHARS or holds_paragraph:
        raise InputError(
            f"{where}: <{_local(el.tag)}> on line {line} is never closed, so the text after it would be left out "
            "with it; close it"
        )


def extract_blocks(root: etree._Element, where: str = "the document") -> Extracted:
    """Walk ``root`` in document order and cut it into blocks. Iterative, so nesting depth cannot overflow.
    Raises InputError (naming ``where``) rather than drop text that an unclosed tag took in."""
    blocks: list[Block] = []
    anchors: dict[str, int] = {}
    parts: list[str] = []
    mark_stack: list[frozenset[str]] = [frozenset()]
    heading_stack: list[int] = [0]
    skip_depth = 0  # > 0 while inside a dropped subtree
    title_el = next(iter(root.xpath("//*[local-name()='title']")), None)
    title = normalize_paragraph(title_el.text or "") or None if title_el is not None else None

    def flush() -> None:
        text = normalize_paragraph(_NOTE_MARK.sub("", "".join(parts)))
        parts.clear()
        # Only what has a letter or digit is speakable: "* * * * *" scene breaks are not.
        if any(c.isalnum() for c in text):
            blocks.append(Block(text, heading_stack[-1], mark_stack[-1]))

    for event, el in etree.iterwalk(root, events=("start", "end")):
        if isinstance(el, etree._Entity):
            # Undeclared named entities (&nbsp; in XHTML whose DTD we refuse to load) survive as nodes.
            if event == "start" and not skip_depth:
                code = html.entities.name2codepoint.get(el.name)
                parts.append(chr(code) if code else "")
                parts.append(el.tail or "")
            continue
        if not isinstance(el.tag, str):  # comments, processing instructions
            if event == "start" and not skip_depth:
                parts.append(el.tail or "")
            continue
        name = _local(el.tag)
        if event == "start":
            if skip_depth:
                skip_depth += 1
                continue
            marks = _marks_of(el)
            dropped = _is_dropped(el, name, marks)
            if name in _BLOCK:
                flush()
            # Anchors count even on dropped elements: a TOC may point at a page-break marker.
            for key in ("id", "name") if name == "a" else ("id",):
                anchor = el.get(key)
                if anchor:
                    anchors.setdefault(anchor, len(blocks))
            if dropped:
                refuse_hidden_text(el, where)
                skip_depth = 1
                continue
            mark_stack.append(mark_stack[-1] | marks if marks else mark_stack[-1])
            heading_stack.append(_HEADINGS.get(name, heading_stack[-1]))
            if name == "br" or name in ("td", "th"):
                parts.append(" ")
            parts.append(el.text or "")
        else:
            if skip_depth:
                skip_depth -= 1
                if skip_depth:
                    continue
                # The dropped element itself just ended: its tail is ordinary text.
                parts.append(el.tail or "")
                continue
            if name in _BLOCK:
                flush()
            elif name in ("td", "th"):
                parts.append(" ")
            mark_stack.pop()
            heading_stack.pop()
            parts.append(el.tail or "")
    flush()
    return Extracted(tuple(blocks), anchors, title)


# -- safe parsing ----------------------------------------------------------------------------------


def _xml_parser() -> etree.XMLParser:
    # No entity substitution, no DTD loading, no network, libxml2's size and depth limits kept.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _html_parser() -> lxml_html.HTMLParser:
    return lxml_html.HTMLParser(no_network=True, huge_tree=False, remove_comments=True, remove_pis=True)


def _entities_error(where: str) -> InputError:
    return InputError(f"{where} declares XML entities (a possible XXE or entity-expansion attack); refusing to read it")


def _limit_error(message: str, where: str) -> InputError:
    """The InputError for one of libxml2's resource limits, by its message."""
    if "depth" in message.lower():
        return InputError(
            f"{where}: its elements are nested more than {MAX_DEPTH} levels deep (the limit is {MAX_DEPTH}); "
            "refusing to read only part of it"
        )
    return InputError(
        f"{where}: holds a single text or attribute value over {MAX_TEXT_MB} MB long (the limit); "
        "refusing to read only part of it"
    )


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())  # libxml2's messages may hold line breaks


def _try_xml(data: bytes, where: str) -> tuple[etree._Element | None, etree.XMLSyntaxError | None]:
    """The parsed document, or None and the parser's error (None too when the document is empty). Entity
    declarations raise InputError: no parser may read them."""
    try:
        root = etree.fromstring(data, _xml_parser())
    except etree.XMLSyntaxError as exc:
        if exc.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT and "entity" in str(exc).lower():
            raise _entities_error(where) from None  # the amplification guard stopped a billion-laughs expansion
        return None, exc
    if root is not None:
        refuse_entity_declarations(root.getroottree(), where)
    return root, None


def parse_xml(data: bytes, where: str) -> etree._Element:
    """Parse XML safely. A document that declares entities (XXE, billion laughs) is refused outright."""
    root, error = _try_xml(data, where)
    if error is not None:
        if error.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
            raise _limit_error(str(error), where)
        raise InputError(f"{where} is not well-formed XML ({_one_line(error)}); the file is damaged")
    if root is None:
        raise InputError(f"{where} is empty; the file is damaged")
    return root


def refuse_entity_declarations(tree: etree._ElementTree, where: str) -> None:
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.entities()):
        raise _entities_error(where)


def parse_markup(data: bytes, where: str) -> etree._Element:
    """Parse an XHTML content document; fall back to the forgiving HTML parser for sloppy markup. Also past
    the XML parser's limits: in markup that is not well-formed, an unclosed <br> counts as a level of nesting
    for it, and the HTML parser, which knows better, applies the same limits."""
    root, _error = _try_xml(data, where)
    if root is not None:
        return root
    declared = _XML_ENCODING.search(data[:1024])
    encoding = declared.group(1).decode("ascii") if declared else "utf-8"  # XML's default
    return parse_html(decode_bytes(data, where, encoding), where)


def parse_html(text: str, where: str) -> etree._Element:
    """Parse HTML text safely, whole: InputError rather than a tree that silently lacks the rest of the text.
    The HTML parser does not expand entity declarations; we refuse them anyway."""
    if _ENTITY_DECL.search(text[:65536]):
        raise _entities_error(where)
    # lxml refuses str input that still carries an XML encoding declaration: the text is decoded already.
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    # Browsers drop NUL characters from text (libxml2 would make each one a U+FFFD).
    text = _DOCUMENT_END.sub("", text.replace("\x00", ""))
    if not text.strip():
        raise InputError(f"{where} is empty: there is nothing to read")
    unclosed = scan(text, where)
    parser = _html_parser()
    try:
        root = lxml_html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise InputError(f"{where} could not be parsed as HTML ({exc})") from None
    for error in parser.error_log:
        # A fatal error stops the recovering parser where it is; what it returns is only the first part.
        if error.level == etree.ErrorLevels.FATAL:
            if error.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
                raise _limit_error(error.message, where)
            raise InputError(f"{where}: could not be parsed to the end ({_one_line(error.message)}, line {error.line})")
    if unclosed:
        for el in root.iter():
            if isinstance(el.tag, str) and (el.tag.lower(), el.sourceline) in unclosed:
                el.set(UNCLOSED, str(el.sourceline))
    return root
