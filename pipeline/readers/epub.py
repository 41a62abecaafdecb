"""EPUB 2 and 3 reader: spine order, chapters from the nav document or the NCX, front/back matter left out.

We parse the container, OPF, nav and NCX ourselves (lxml, entities/DTD/network off) instead of going through
ebooklib: every byte we read passes one size-capped zip reader, every XML document one hardened parser, and we
need details ebooklib exposes unevenly (linear spine items, guide and landmarks, fragment anchors, epub:type).

Hostile input fails fast with one ``InputError`` line: not a zip, zip bombs (declared sizes and ratios checked
before anything is decompressed, and actual reads capped), member names that climb out of the archive, DRM,
entity declarations in any XML document, a missing container or package document, no readable text.
Nothing is ever extracted to disk.
"""

from __future__ import annotations

import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lxml import etree

from pipeline.errors import InputError
from pipeline.models import Book, Chapter
from pipeline.readers.htmltext import EPUB_TYPE, Block, Extracted, extract_blocks, parse_markup, parse_xml
from pipeline.text import normalize_paragraph

MB = 1024 * 1024
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 50 * MB  # declared or actual uncompressed size of one member
MAX_TOTAL_BYTES = 200 * MB  # declared, and actually read, over the whole archive
MAX_RATIO = 100  # deflated XHTML is ~3-10x; zeros are ~1000x
RATIO_FLOOR = 1 * MB  # tiny members may compress absurdly well without harm
MAX_COVER_BYTES = 20 * MB

_CONTAINER = "META-INF/container.xml"
_CONTENT_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/xml", "text/xml"})
_FONT_EXTENSIONS = (".ttf", ".otf", ".woff", ".woff2", ".eot")

# Structural names (epub:type, guide type, landmark) -> how the plan reports the skipped item.
_MATTER_TYPES = {
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
}
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
    (re.compile(r"project gutenberg.*licen[cs]e|^(the )?(full )?licen[cs]e( agreement)?$"), "licence"),
)
_PG_START = re.compile(r"^\W*\*{3}\s*start of (the|this) project gutenberg", re.IGNORECASE)
_PG_END = re.compile(r"^\W*(\*{3}\s*)?end of (the |this )?project gutenberg", re.IGNORECASE)
_PG_HEADER, _PG_FOOTER = "gutenberg-header", "gutenberg-footer"
_TITLE_PAGE_MAX_CHARS = 500
_BY_LINE = re.compile(r"^(by|written by|von|par|di|por)\s+\S", re.IGNORECASE)


# -- the archive -----------------------------------------------------------------------------------


def _check_directory_size(path: Path, label: str) -> None:
    """Refuse an archive that claims more members than any book has *before* zipfile builds an object per
    member: the end-of-central-directory record (and its ZIP64 twin) states the count up front."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_start = max(0, size - 65536 - 22)  # the record sits within the last 64 KB comment + 22 bytes
        handle.seek(tail_start)
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return  # not a zip: zipfile will say so
        entries, directory = struct.unpack_from("<HI", tail, at + 10)
        locator = at - 20
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0 and tail[locator:].startswith(b"PK\x06\x07"):
            (record,) = struct.unpack_from("<Q", tail, locator + 8)
            handle.seek(record)
            zip64 = handle.read(56)
            if zip64.startswith(b"PK\x06\x06") and len(zip64) >= 48:
                entries, directory = struct.unpack_from("<QQ", zip64, 32)
    if entries > MAX_MEMBERS or directory > MAX_MEMBERS * 1024:
        raise InputError(
            f"{label}: the archive's directory lists {entries} files in {directory} bytes "
            f"(limit {MAX_MEMBERS} files); refusing it"
        )


class _SafeZip:
    """A zip archive checked for bombs and climbing names before anything is read, with every read capped."""

    def __init__(self, path: Path) -> None:
        self.label = path.name
        try:
            _check_directory_size(path, self.label)
            self._zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"{self.label}: not an EPUB (not a readable zip archive: {exc})") from None
        self._read_total = 0
        self._names: dict[str, str] = {}
        try:
            self._validate()
        except BaseException:
            self._zip.close()
            raise

    def _validate(self) -> None:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"{self.label}: {len(infos)} files in the archive (limit {MAX_MEMBERS}); refusing it")
        declared = 0
        for info in infos:
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name) or "\0" in name:
                raise InputError(f"{self.label}: archive member {name!r} points outside the book; refusing it")
            if info.flag_bits & 0x1:
                raise InputError(f"{self.label}: archive member {name!r} is password-protected")
            if info.file_size > MAX_MEMBER_BYTES:
                raise InputError(
                    f"{self.label}: {name!r} declares {info.file_size // MB} MB uncompressed "
                    f"(limit {MAX_MEMBER_BYTES // MB} MB); refusing a possible zip bomb"
                )
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise InputError(
                    f"{self.label}: {name!r} expands {info.file_size // max(info.compress_size, 1)}-fold "
                    f"(limit {MAX_RATIO}); refusing a possible zip bomb"
                )
            declared += info.file_size
            self._names.setdefault(name.casefold(), name)
            self._names[name] = name
        if declared > MAX_TOTAL_BYTES:
            raise InputError(
                f"{self.label}: {declared // MB} MB uncompressed in total "
                f"(limit {MAX_TOTAL_BYTES // MB} MB); refusing a possible zip bomb"
            )

    def resolve(self, name: str) -> str | None:
        """The member's real name; EPUBs made on case-insensitive systems sometimes get the case wrong."""
        return self._names.get(name) or self._names.get(name.casefold())

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        real = self.resolve(name)
        if real is None:
            raise KeyError(name)
        try:
            with self._zip.open(real) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            raise InputError(f"{self.label}: {real!r} is damaged ({exc})") from None
        if len(data) > limit:
            raise InputError(f"{self.label}: {real!r} is larger than {limit // MB} MB; refusing it")
        self._read_total += len(data)
        if self._read_total > MAX_TOTAL_BYTES:
            raise InputError(f"{self.label}: more than {MAX_TOTAL_BYTES // MB} MB to decompress; refusing it")
        return data

    def close(self) -> None:
        self._zip.close()


# -- the package -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    id: str
    path: str  # member name inside the zip
    media_type: str
    properties: frozenset[str]


@dataclass
class _TocEntry:
    title: str
    path: str | None
    fragment: str | None
    children: list[_TocEntry] = field(default_factory=list)


@dataclass
class _Package:
    title: str | None
    authors: list[str]
    language: str | None
    items: dict[str, _Item]
    spine: list[_Item]
    toc_item: _Item | None  # the NCX named by the spine
    nav_item: _Item | None
    guide: list[tuple[str, str, str | None]]  # (type, path, fragment)
    cover_id: str | None


def _resolve_href(base: str, href: str | None) -> tuple[str, str | None] | None:
    """A reference relative to the document at ``base`` -> (zip member, fragment), or None when it points
    outside the book (another site, or up out of the archive)."""
    if href is None:
        return None
    parts = urlsplit(href.strip())
    if parts.scheme or parts.netloc:
        return None
    fragment = unquote(parts.fragment) or None
    if not parts.path:
        return base, fragment
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(parts.path)))
    if joined.startswith(("../", "/")) or joined == "..":
        return None
    return joined, fragment


def _ns_local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and _ns_local(c) == name]


def _descendants(el: etree._Element, name: str) -> Iterable[etree._Element]:
    return (c for c in el.iter() if isinstance(c.tag, str) and _ns_local(c) == name)


def _text(el: etree._Element | None) -> str:
    return normalize_paragraph("".join(el.itertext())) if el is not None else ""


# Three-letter ISO 639-2 codes some EPUBs declare, for the languages we are most likely to meet.
_TWO_LETTER = {"eng": "en", "zho": "zh", "chi": "zh", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr"}
_TWO_LETTER |= {"spa": "es", "ita": "it", "jpn": "ja", "kor": "ko", "rus": "ru", "por": "pt", "nld": "nl"}


def _primary_language(value: str) -> str | None:
    tag = value.strip().replace("_", "-").split("-")[0].lower()
    tag = _TWO_LETTER.get(tag, tag)
    return tag if re.fullmatch(r"[a-z]{2,3}", tag) else None


def _rootfile(zf: _SafeZip) -> str:
    if zf.resolve(_CONTAINER) is None:
        raise InputError(f"{zf.label}: not an EPUB ({_CONTAINER} is missing)")
    root = parse_xml(zf.read(_CONTAINER), f"{zf.label}: {_CONTAINER}")
    for rootfile in _descendants(root, "rootfile"):
        path = rootfile.get("full-path")
        if path and rootfile.get("media-type", "application/oebps-package+xml").endswith("package+xml"):
            resolved = _resolve_href("", path)
            if resolved and zf.resolve(resolved[0]):
                return resolved[0]
            raise InputError(f"{zf.label}: the package document {path!r} named by {_CONTAINER} is missing")
    raise InputError(f"{zf.label}: {_CONTAINER} names no package document (.opf)")


def _check_drm(zf: _SafeZip) -> None:
    if zf.resolve("META-INF/rights.xml"):
        raise InputError(f"{zf.label}: the book is DRM-protected (META-INF/rights.xml); use a DRM-free copy")
    if not zf.resolve("META-INF/encryption.xml"):
        return
    root = parse_xml(zf.read("META-INF/encryption.xml"), f"{zf.label}: META-INF/encryption.xml")
    for ref in _descendants(root, "CipherReference"):
        uri = unquote(ref.get("URI", ""))
        # Font obfuscation is allowed by the spec and harmless: we never read fonts. Anything else is DRM.
        if not uri.lower().endswith(_FONT_EXTENSIONS):
            raise InputError(f"{zf.label}: the book is DRM-protected ({uri!r} is encrypted); use a DRM-free copy")


def _parse_package(zf: _SafeZip, opf_path: str) -> _Package:
    root = parse_xml(zf.read(opf_path), f"{zf.label}: {opf_path}")
    metadata = next(iter(_descendants(root, "metadata")), None)
    manifest = next(iter(_descendants(root, "manifest")), None)
    spine_el = next(iter(_descendants(root, "spine")), None)
    if manifest is None or spine_el is None:
        raise InputError(f"{zf.label}: {opf_path} has no manifest or spine; the EPUB is damaged")

    title: str | None = None
    authors: list[str] = []
    language = None
    cover_id = None
    if metadata is not None:
        title = next((t for t in map(_text, _descendants(metadata, "title")) if t), None)
        roles = {
            (m.get("refines") or "").lstrip("#"): _text(m)
            for m in _descendants(metadata, "meta")
            if m.get("property") == "role"
        }
        for creator in _descendants(metadata, "creator"):
            role = creator.get("{http://www.idpf.org/2007/opf}role") or roles.get(creator.get("id") or "")
            name = _text(creator)
            if name and (role is None or role.strip() == "aut"):
                authors.append(name)
        declared = next((t for t in map(_text, _descendants(metadata, "language")) if t), None)
        language = _primary_language(declared) if declared else None
        for meta in _descendants(metadata, "meta"):
            if meta.get("name") == "cover" and meta.get("content"):
                cover_id = meta.get("content")

    items: dict[str, _Item] = {}
    for el in _children(manifest, "item"):
        resolved = _resolve_href(opf_path, el.get("href"))
        item_id = el.get("id")
        if resolved is None or not item_id:
            continue
        items[item_id] = _Item(
            item_id,
            resolved[0],
            (el.get("media-type") or "").lower(),
            frozenset(_tokens(el.get("properties"))),
        )
    spine = [
        items[ref.get("idref", "")]
        for ref in _children(spine_el, "itemref")
        if ref.get("idref") in items and ref.get("linear", "yes") != "no"
    ]
    toc_item = items.get(spine_el.get("toc") or "") or next(
        (i for i in items.values() if i.media_type == "application/x-dtbncx+xml"), None
    )
    nav_item = next((i for i in items.values() if "nav" in i.properties), None)
    guide: list[tuple[str, str, str | None]] = []
    for ref in _descendants(root, "reference"):
        target = _resolve_href(opf_path, ref.get("href"))
        if target and ref.get("type"):
            guide.append((ref.get("type", "").lower(), target[0], target[1]))
    return _Package(title, authors, language, items, spine, toc_item, nav_item, guide, cover_id)


def _tokens(value: str | None) -> set[str]:
    return set(value.lower().split()) if value else set()


# -- table of contents -----------------------------------------------------------------------------


def _read_nav(zf: _SafeZip, item: _Item) -> tuple[list[_TocEntry], list[tuple[str, str, str | None]]]:
    root = parse_markup(zf.read(item.path), f"{zf.label}: {item.path}")
    navs = list(_descendants(root, "nav"))

    def nav_types(nav: etree._Element) -> set[str]:
        return _tokens(nav.get(EPUB_TYPE)) | _tokens(nav.get("epub:type")) | _tokens(nav.get("role"))

    toc_nav = next((n for n in navs if nav_types(n) & {"toc", "doc-toc"}), navs[0] if navs else None)
    entries: list[_TocEntry] = []
    if toc_nav is not None:
        top = next(iter(_descendants(toc_nav, "ol")), None)
        if top is not None:
            entries = _nav_list(top, item.path)
    landmarks: list[tuple[str, str, str | None]] = []
    for nav in navs:
        if "landmarks" in nav_types(nav):
            for a in _descendants(nav, "a"):
                target = _resolve_href(item.path, a.get("href"))
                for kind in _tokens(a.get(EPUB_TYPE)) | _tokens(a.get("epub:type")):
                    if target:
                        landmarks.append((kind, target[0], target[1]))
    return entries, landmarks


def _nav_list(ol: etree._Element, base: str) -> list[_TocEntry]:
    entries = []
    for li in _children(ol, "li"):
        label = next((c for c in li if _ns_local(c) in ("a", "span")), None)
        target = _resolve_href(base, label.get("href")) if label is not None else None
        sub = next(iter(_children(li, "ol")), None)
        entries.append(
            _TocEntry(
                _text(label),
                target[0] if target else None,
                target[1] if target else None,
                _nav_list(sub, base) if sub is not None else [],
            )
        )
    return entries


def _read_ncx(zf: _SafeZip, item: _Item) -> list[_TocEntry]:
    root = parse_xml(zf.read(item.path), f"{zf.label}: {item.path}")
    nav_map = next(iter(_descendants(root, "navMap")), None)
    return _ncx_points(nav_map, item.path) if nav_map is not None else []


def _ncx_points(parent: etree._Element, base: str) -> list[_TocEntry]:
    entries = []
    for point in _children(parent, "navPoint"):
        label = next(iter(_descendants(point, "text")), None)
        content = next(iter(_children(point, "content")), None)
        target = _resolve_href(base, content.get("src")) if content is not None else None
        entries.append(
            _TocEntry(
                _text(label),
                target[0] if target else None,
                target[1] if target else None,
                _ncx_points(point, base),
            )
        )
    return entries


def _only_in(entry: _TocEntry, path: str) -> bool:
    return all(c.path == path and _only_in(c, path) for c in entry.children)


def _chapter_entries(entries: list[_TocEntry]) -> list[_TocEntry]:
    """Flatten the TOC to chapter starts. Sub-entries inside the parent's own document are sections of one
    chapter; sub-entries in other documents make the parent a part and are chapters themselves."""
    out: list[_TocEntry] = []
    for entry in entries:
        if entry.path is not None:
            out.append(entry)
        if entry.children and (entry.path is None or not _only_in(entry, entry.path)):
            out.extend(_chapter_entries(entry.children))
    return out


# -- chapters --------------------------------------------------------------------------------------


@dataclass
class _Doc:
    item: _Item
    content: Extracted
    body_names: set[str]  # class and id tokens of <body>


@dataclass
class _Candidate:
    title: str | None
    doc: int
    fragment: str | None
    blocks: list[Block] = field(default_factory=list)
    forced_kind: str | None = None


def _key(text: str) -> str:
    """Compare titles by letters and digits only: "Alice's" == "Alice’s", "CHAPTER I." == "chapter i"."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def _mark_gutenberg(docs: list[_Doc]) -> None:
    """Older Gutenberg EPUBs have no pg-header/pg-footer markup, only the START/END lines: mark what lies
    up to the first and from the second as boilerplate."""
    flat = [(doc, i) for doc in docs for i in range(len(doc.content.blocks))]
    texts = [doc.content.blocks[i].text for doc, i in flat]
    start = next((n for n, text in enumerate(texts) if _PG_START.match(text)), -1)
    end = next((n for n in range(start + 1, len(texts)) if _PG_END.match(texts[n])), len(texts))
    if start < 0 and end == len(texts):
        return
    new_blocks = {id(doc): list(doc.content.blocks) for doc in docs}
    for n, (doc, i) in enumerate(flat):
        if n <= start or n >= end:
            block = new_blocks[id(doc)][i]
            new_blocks[id(doc)][i] = replace(block, marks=block.marks | {_PG_HEADER if n <= start else _PG_FOOTER})
    for doc in docs:
        doc.content = replace(doc.content, blocks=tuple(new_blocks[id(doc)]))


def _kind_from_marks(blocks: list[Block]) -> str | None:
    chars = sum(len(b.text) for b in blocks)
    if not chars:
        return None
    # Only wholly-Gutenberg stretches are named after it; mixed ones lose their Gutenberg lines later.
    pg = [b for b in blocks if b.marks & {_PG_HEADER, _PG_FOOTER}]
    if len(pg) == len(blocks):
        return "licence" if any(_PG_FOOTER in b.marks for b in pg) else "Project Gutenberg header"
    counts: dict[str, int] = {}
    for block in blocks:
        for mark in block.marks:
            if mark in _MATTER_TYPES:
                kind = _MATTER_TYPES[mark]
                counts[kind] = counts.get(kind, 0) + len(block.text)
    best = max(counts.items(), key=lambda kv: kv[1], default=None)
    return best[0] if best and best[1] * 2 > chars else None


def _kind_from_title(title: str | None) -> str | None:
    plain = _plain(title or "")
    return next((kind for pattern, kind in _TITLE_KINDS if pattern.search(plain)), None)


def _doc_title(doc: _Doc) -> str | None:
    title = (doc.content.title or "").strip("\"'“”‘’ ")
    return title or None


def _uncovered_kind(doc: _Doc, structural: dict[tuple[str, str | None], str], nav_path: str | None) -> str | None:
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
    return _kind_from_marks(blocks) or _kind_from_title(_doc_title(doc))


def _strip_title_headings(blocks: list[Block], title: str) -> list[Block]:
    """The title is spoken separately: drop the leading headings that repeat it (possibly split in two, as in
    ``<h2>CHAPTER I.</h2><h3>Down the Rabbit-Hole</h3>``)."""
    remaining = _key(title)
    whole = remaining
    n = 0
    while n < len(blocks) and remaining:
        key = _key(blocks[n].text)
        if not blocks[n].heading and key != whole:
            break  # a plain paragraph goes only when it is the whole title (<p class="chapter-title">)
        if key and remaining.startswith(key):
            remaining = remaining[len(key) :]
        elif key != whole:
            break
        n += 1
    return blocks[n:]


def _build_candidates(docs: list[_Doc], starts: list[_TocEntry], structural, nav_path) -> list[_Candidate]:
    by_path = {doc.item.path: n for n, doc in enumerate(docs)}
    positioned: dict[int, list[tuple[int, int, _TocEntry]]] = {}
    for order, entry in enumerate(starts):
        d = by_path.get(entry.path or "")
        if d is None:
            continue  # points outside the reading order
        anchors = docs[d].content.anchors
        block = anchors.get(entry.fragment, 0) if entry.fragment else 0
        positioned.setdefault(d, []).append((block, order, entry))

    candidates: list[_Candidate] = []
    if not positioned:
        # No usable table of contents: every document in the reading order is a chapter.
        for d, doc in enumerate(docs):
            kind = _uncovered_kind(doc, structural, nav_path)
            candidates.append(_Candidate(None, d, None, list(doc.content.blocks), kind))
        return candidates
    current: _Candidate | None = None  # the chapter that uncovered text attaches to
    for d, doc in enumerate(docs):
        blocks = list(doc.content.blocks)
        here = sorted(positioned.get(d, []), key=lambda t: (t[0], t[1]))
        if not here:
            kind = _uncovered_kind(doc, structural, nav_path)
            if kind or current is None:
                cand = _Candidate(None, d, None, blocks, kind)
                candidates.append(cand)
                if kind is None:
                    current = cand
            else:
                current.blocks.extend(blocks)
            continue
        prefix = blocks[: here[0][0]]
        if prefix:
            if current is None:
                current = _Candidate(None, d, None, [])
                candidates.append(current)
            current.blocks.extend(prefix)
        for n, (block, _order, entry) in enumerate(here):
            stop = here[n + 1][0] if n + 1 < len(here) else len(blocks)
            current = _Candidate(entry.title or None, d, entry.fragment, blocks[block:stop])
            candidates.append(current)
    return candidates


def _classify(
    cand: _Candidate,
    docs: list[_Doc],
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
    if front and not is_last and _key(title) and _key(title) == _key(book_title or ""):
        return "title page" if _names_the_author(_strip_title_headings(cand.blocks, title), authors) else None
    return None


def _names_the_author(body: list[Block], authors: list[str]) -> bool:
    """Whether the few lines under a title are a title page's: nothing at all, a "by ..." line, or the
    author's name."""
    if sum(len(b.text) for b in body) >= _TITLE_PAGE_MAX_CHARS:
        return False
    if not body or any(_BY_LINE.match(b.text) for b in body):
        return True
    text = _key(" ".join(b.text for b in body))
    return any(_key(author) and _key(author) in text for author in authors)


def _load_docs(zf: _SafeZip, spine: list[_Item]) -> list[_Doc]:
    docs = []
    for item in spine:
        if item.media_type not in _CONTENT_TYPES or zf.resolve(item.path) is None:
            continue  # images or missing files in the spine carry no text
        root = parse_markup(zf.read(item.path), f"{zf.label}: {item.path}")
        body = next(iter(_descendants(root, "body")), None)
        names = set()
        if body is not None:
            names = _tokens(body.get("class")) | _tokens(body.get("id"))
        docs.append(_Doc(item, extract_blocks(root), names))
    return docs


def _cover(zf: _SafeZip, pkg: _Package) -> tuple[bytes | None, str | None]:
    candidates = [i for i in pkg.items.values() if "cover-image" in i.properties]
    if pkg.cover_id and pkg.cover_id in pkg.items:
        candidates.append(pkg.items[pkg.cover_id])
    candidates += [
        i
        for i in pkg.items.values()
        if i.media_type.startswith("image/") and ("cover" in i.id.lower() or "cover" in i.path.lower())
    ]
    for item in candidates:
        if zf.resolve(item.path) is None:
            continue
        try:
            data = zf.read(item.path, MAX_COVER_BYTES)
        except InputError:
            continue  # a broken or oversized cover is not worth failing the book over
        if data.startswith(b"\xff\xd8\xff"):
            return data, "image/jpeg"
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return data, "image/png"
    return None, None


def read_epub(path: Path, *, include_matter: bool = False) -> Book:
    """Read an EPUB 2 or 3 file into a ``Book``. Front/back matter (cover, title page, contents, licence,
    copyright, colophon) is left out and named in ``Book.skipped`` unless ``include_matter`` is true."""
    zf = _SafeZip(path)
    try:
        _check_drm(zf)
        opf_path = _rootfile(zf)
        pkg = _parse_package(zf, opf_path)
        toc: list[_TocEntry] = []
        structural: dict[tuple[str, str | None], str] = {}
        nav_path = pkg.nav_item.path if pkg.nav_item and zf.resolve(pkg.nav_item.path) else None
        if nav_path and pkg.nav_item:
            toc, landmarks = _read_nav(zf, pkg.nav_item)
            for kind, target, fragment in landmarks:
                if kind in _MATTER_TYPES:
                    structural[(target, fragment)] = _MATTER_TYPES[kind]
        if not toc and pkg.toc_item and zf.resolve(pkg.toc_item.path):
            toc = _read_ncx(zf, pkg.toc_item)
        for kind, target, fragment in pkg.guide:
            if kind in _MATTER_TYPES:
                structural.setdefault((target, fragment), _MATTER_TYPES[kind])
        docs = _load_docs(zf, pkg.spine)
        cover, cover_mime = _cover(zf, pkg)
    finally:
        zf.close()
    if not docs:
        raise InputError(f"{path.name}: the EPUB's reading order (spine) holds no readable documents")

    _mark_gutenberg(docs)
    candidates = _build_candidates(docs, _chapter_entries(toc), structural, nav_path)
    chapters: list[Chapter] = []
    skipped: list[str] = []
    notices: list[str] = []  # Gutenberg lines cut from a kept chapter; reported unless the licence already is
    story_started = False  # a chapter with text has been kept: no title page after it
    for n, cand in enumerate(candidates):
        doc = docs[cand.doc]
        found = cand.title or next((b.text for b in cand.blocks if b.heading), None) or _doc_title(doc)
        matter = _classify(
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
        if not cand.title and pkg.title and _key(title) == _key(pkg.title):
            title = f"Chapter {len(chapters) + 1}"  # every file's <title> is the book's: say where we are
        blocks = _strip_title_headings(cand.blocks, title)
        if not include_matter:
            kept = [b for b in blocks if not b.marks & {_PG_HEADER, _PG_FOOTER}]
            if len(kept) < len(blocks):
                notices.append(f"Project Gutenberg notice in {title} (licence)")
            blocks = kept
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
        raise InputError(f"{path.name}: the EPUB holds no readable text{hint}")
    return Book(
        title=pkg.title or path.stem,
        chapters=tuple(chapters),
        author=", ".join(pkg.authors) or None,
        language=pkg.language,
        cover=cover,
        cover_mime=cover_mime,
        source=path,
        skipped=tuple(skipped),
    )
