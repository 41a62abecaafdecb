"""The package document (OPF): metadata, manifest, spine, guide and cover, read through the container, with
DRM refused. Also the small XML helpers the other parts share."""

from __future__ import annotations

import base64
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from lxml import etree

from pipeline.errors import InputError
from pipeline.models import BookInfo
from pipeline.readers.epub.safezip import MAX_COVER_BYTES, SafeZip
from pipeline.readers.htmltext import parse_xml
from pipeline.textfacts import normalize_paragraph, primary_language

_CONTAINER = "META-INF/container.xml"
CONTENT_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/xml", "text/xml"})
_FONT_EXTENSIONS = (".ttf", ".otf", ".woff", ".woff2", ".eot")


@dataclass(frozen=True)
class Item:
    id: str
    path: str  # member name inside the zip
    media_type: str
    properties: frozenset[str]


@dataclass
class Package:
    title: str | None
    authors: list[str]
    language: str | None
    items: dict[str, Item]
    spine: list[Item]
    toc_item: Item | None  # the NCX named by the spine
    nav_item: Item | None
    guide: list[tuple[str, str, str | None]]  # (type, path, fragment)
    cover_id: str | None
    spine_gaps: list[str]  # reading-order entries that name no usable item, described for Book.skipped
    info: BookInfo = field(default_factory=BookInfo)


def resolve_href(base: str, href: str | None) -> tuple[str, str | None] | None:
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


def local_name(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and local_name(c) == name]


def descendants(el: etree._Element, name: str) -> Iterable[etree._Element]:
    return (c for c in el.iter() if isinstance(c.tag, str) and local_name(c) == name)


def text_of(el: etree._Element | None) -> str:
    return normalize_paragraph("".join(el.itertext())) if el is not None else ""


def rootfile(zf: SafeZip) -> str:
    if zf.resolve(_CONTAINER) is None:
        raise InputError(f"{zf.label}: not an EPUB ({_CONTAINER} is missing)")
    root = parse_xml(zf.read(_CONTAINER), f"{zf.label}: {_CONTAINER}")
    for rootfile in descendants(root, "rootfile"):
        path = rootfile.get("full-path")
        if path and rootfile.get("media-type", "application/oebps-package+xml").endswith("package+xml"):
            resolved = resolve_href("", path)
            if resolved and zf.resolve(resolved[0]):
                return resolved[0]
            raise InputError(f"{zf.label}: the package document {path!r} named by {_CONTAINER} is missing")
    raise InputError(f"{zf.label}: {_CONTAINER} names no package document (.opf)")


def check_drm(zf: SafeZip) -> None:
    if zf.resolve("META-INF/rights.xml"):
        raise InputError(f"{zf.label}: the book is DRM-protected (META-INF/rights.xml); use a DRM-free copy")
    if not zf.resolve("META-INF/encryption.xml"):
        return
    root = parse_xml(zf.read("META-INF/encryption.xml"), f"{zf.label}: META-INF/encryption.xml")
    for ref in descendants(root, "CipherReference"):
        uri = unquote(ref.get("URI", ""))
        # Font obfuscation is allowed by the spec and harmless: we never read fonts. Anything else is DRM.
        if not uri.lower().endswith(_FONT_EXTENSIONS):
            raise InputError(f"{zf.label}: the book is DRM-protected ({uri!r} is encrypted); use a DRM-free copy")


def parse_package(zf: SafeZip, opf_path: str) -> Package:
    root = parse_xml(zf.read(opf_path), f"{zf.label}: {opf_path}")
    metadata = next(iter(descendants(root, "metadata")), None)
    manifest = next(iter(descendants(root, "manifest")), None)
    spine_el = next(iter(descendants(root, "spine")), None)
    if manifest is None or spine_el is None:
        raise InputError(f"{zf.label}: {opf_path} has no manifest or spine; the EPUB is damaged")

    title: str | None = None
    authors: list[str] = []
    language = None
    cover_id = None
    if metadata is not None:
        title = next((t for t in map(text_of, descendants(metadata, "title")) if t), None)
        roles = {
            (m.get("refines") or "").lstrip("#"): text_of(m)
            for m in descendants(metadata, "meta")
            if m.get("property") == "role"
        }
        for creator in descendants(metadata, "creator"):
            role = creator.get("{http://www.idpf.org/2007/opf}role") or roles.get(creator.get("id") or "")
            name = text_of(creator)
            if name and (role is None or role.strip() == "aut"):
                authors.append(name)
        declared = next((t for t in map(text_of, descendants(metadata, "language")) if t), None)
        language = primary_language(declared)
        for meta in descendants(metadata, "meta"):
            if meta.get("name") == "cover" and meta.get("content"):
                cover_id = meta.get("content")
        info = read_info(metadata)
    else:
        info = BookInfo()

    items: dict[str, Item] = {}
    outside: set[str] = set()
    for el in children(manifest, "item"):
        resolved = resolve_href(opf_path, el.get("href"))
        item_id = el.get("id")
        if resolved is None or not item_id:
            if item_id:
                outside.add(item_id)
            continue
        items[item_id] = Item(
            item_id,
            resolved[0],
            (el.get("media-type") or "").lower(),
            frozenset(tokens(el.get("properties"))),
        )
    spine: list[Item] = []
    gaps: list[str] = []
    for ref in children(spine_el, "itemref"):
        idref = ref.get("idref", "")
        if ref.get("linear", "yes") == "no":
            continue
        if idref in items:
            spine.append(items[idref])
        elif idref in outside:
            gaps.append(f"{idref} (listed in the reading order but its file is outside the book)")
        else:
            gaps.append(f"{idref or '(no idref)'} (listed in the reading order but not in the manifest)")
    toc_item = items.get(spine_el.get("toc") or "") or next(
        (i for i in items.values() if i.media_type == "application/x-dtbncx+xml"), None
    )
    nav_item = next((i for i in items.values() if "nav" in i.properties), None)
    guide: list[tuple[str, str, str | None]] = []
    for ref in descendants(root, "reference"):
        target = resolve_href(opf_path, ref.get("href"))
        if target and ref.get("type"):
            guide.append((ref.get("type", "").lower(), target[0], target[1]))
    return Package(title, authors, language, items, spine, toc_item, nav_item, guide, cover_id, gaps, info)


_ISBN = re.compile(r"(?:97[89][- ]?)?(?:\d[- ]?){9}[\dXx]")


def _isbn(text: str) -> str | None:
    """The ISBN in an identifier ("urn:isbn:978-0-...", "ISBN 0-14-..."), digits only; None when it holds none."""
    found = _ISBN.search(text)
    if not found:
        return None
    digits = re.sub(r"[- ]", "", found.group()).upper()
    return digits if len(digits) in (10, 13) else None


def plain_text(markup: str) -> str:
    """A description as plain text: EPUBs often hold escaped HTML in dc:description. Paragraphs (p, br, div,
    li) become blank-line breaks, tags go, entities are decoded, spaces collapse."""
    if "<" not in markup:
        return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", markup) if p.strip())
    try:
        root = etree.fromstring(f"<div>{markup}</div>".encode(), etree.HTMLParser())
    except (etree.XMLSyntaxError, ValueError):
        return " ".join(re.sub(r"<[^>]+>", " ", markup).split())
    if root is None:
        return ""
    for el in root.iter("p", "div", "li", "br", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"):
        el.tail = "\n\n" + (el.tail or "")
        if el.tag != "br":
            el.text = "\n\n" + (el.text or "")
    text = "".join(root.itertext())
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip())


def read_info(metadata: etree._Element) -> BookInfo:
    """What the OPF says about the book besides title, authors and language (Dublin Core, EPUB 3's
    belongs-to-collection, calibre's series). The first of each wins."""

    def first(name: str) -> str | None:
        return next((t for t in map(text_of, descendants(metadata, name)) if t), None)

    metas = list(descendants(metadata, "meta"))
    refines: dict[str, dict[str, str]] = {}
    for m in metas:
        if m.get("refines") and m.get("property"):
            refines.setdefault(m.get("refines", "").lstrip("#"), {})[m.get("property", "")] = text_of(m)
    series = index = None
    for m in metas:  # EPUB 3: <meta property="belongs-to-collection" id="c">Name</meta> + group-position
        if m.get("property") == "belongs-to-collection" and text_of(m):
            extra = refines.get(m.get("id") or "", {})
            if extra.get("collection-type", "series") in ("series", ""):
                series, index = text_of(m), extra.get("group-position") or None
                break
    named = {m.get("name"): (m.get("content") or "").strip() for m in metas if m.get("name")}
    if series is None and named.get("calibre:series"):  # calibre writes EPUB 2 style metas
        series, index = named["calibre:series"], named.get("calibre:series_index") or None
    if index is not None:
        try:  # calibre writes "2.0": a series number as people write it
            number = float(index)
            index = str(int(number)) if number.is_integer() else index
        except ValueError:
            pass
    isbn = asin = None
    for ident in descendants(metadata, "identifier"):
        value = text_of(ident)
        scheme = " ".join(v for k, v in ident.attrib.items() if k.endswith("scheme")).lower()
        if "asin" in scheme or "amazon" in scheme or value.lower().startswith(("urn:asin:", "asin:")):
            asin = asin or value.rsplit(":", 1)[-1].strip() or None
        elif isbn is None and ("isbn" in scheme or "isbn" in value.lower()):
            isbn = _isbn(value)
    subjects: list[str] = []
    for subject in map(text_of, descendants(metadata, "subject")):
        for part in re.split(r"\s+--\s+", subject):  # library subject headings: "Fantasy fiction -- Juvenile"
            if part and part not in subjects:
                subjects.append(part)
    description = first("description")
    date = first("date")
    return BookInfo(
        description=(plain_text(description) or None) if description else None,
        publisher=first("publisher"),
        date=date,
        subjects=tuple(subjects),
        series=series,
        series_index=index,
        isbn=isbn,
        asin=asin,
    )


def tokens(value: str | None) -> set[str]:
    return set(value.lower().split()) if value else set()


def cover_of(zf: SafeZip, pkg: Package) -> tuple[bytes | None, str | None]:
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
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return data, "image/webp"
        if data.startswith((b"GIF87a", b"GIF89a")):
            return data, "image/gif"
        if item.media_type == "image/svg+xml" or data.lstrip()[:5].lower() in (b"<svg ", b"<?xml"):
            # Standard Ebooks' cover is an SVG (properties="cover-image"): its pictures travel inside it.
            return _inline_images(zf, item.path, data), "image/svg+xml"
    return None, None


_HREF = re.compile(rb"""((?:xlink:)?href\s*=\s*)(["'])(?!data:|#|[a-z][a-z0-9+.-]*://)([^"']+)\2""", re.I)


def _inline_images(zf: SafeZip, svg_path: str, data: bytes) -> bytes:
    """The SVG with each image it references inside the book turned into a data: URI, so it renders alone."""

    def inline(match: re.Match[bytes]) -> bytes:
        target = resolve_href(svg_path, match.group(3).decode("utf-8", "replace"))
        if target is None or zf.resolve(target[0]) is None:
            return match.group(0)
        try:
            image = zf.read(target[0], MAX_COVER_BYTES)
        except InputError:
            return match.group(0)
        mime = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
        uri = f"data:{mime};base64,".encode() + base64.b64encode(image)
        return match.group(1) + match.group(2) + uri + match.group(2)

    return _HREF.sub(inline, data)
