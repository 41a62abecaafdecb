"""The table of contents: the EPUB 3 nav document (and its landmarks) or the EPUB 2 NCX, flattened to the
entries where chapters start."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from pipeline.readers.epub.package import Item, children, descendants, local_name, resolve_href, text_of, tokens
from pipeline.readers.epub.safezip import SafeZip
from pipeline.readers.htmltext import EPUB_TYPE, parse_markup, parse_xml


@dataclass
class TocEntry:
    title: str
    path: str | None
    fragment: str | None
    children: list[TocEntry] = field(default_factory=list)


def read_nav(zf: SafeZip, item: Item) -> tuple[list[TocEntry], list[tuple[str, str, str | None]]]:
    root = parse_markup(zf.read(item.path), f"{zf.label}: {item.path}")
    navs = list(descendants(root, "nav"))

    def nav_types(nav: etree._Element) -> set[str]:
        return tokens(nav.get(EPUB_TYPE)) | tokens(nav.get("epub:type")) | tokens(nav.get("role"))

    toc_nav = next((n for n in navs if nav_types(n) & {"toc", "doc-toc"}), navs[0] if navs else None)
    entries: list[TocEntry] = []
    if toc_nav is not None:
        top = next(iter(descendants(toc_nav, "ol")), None)
        if top is not None:
            entries = _nav_list(top, item.path)
    landmarks: list[tuple[str, str, str | None]] = []
    for nav in navs:
        if "landmarks" in nav_types(nav):
            for a in descendants(nav, "a"):
                target = resolve_href(item.path, a.get("href"))
                for kind in tokens(a.get(EPUB_TYPE)) | tokens(a.get("epub:type")):
                    if target:
                        landmarks.append((kind, target[0], target[1]))
    return entries, landmarks


def _nav_list(ol: etree._Element, base: str) -> list[TocEntry]:
    entries = []
    for li in children(ol, "li"):
        label = next((c for c in li if local_name(c) in ("a", "span")), None)
        target = resolve_href(base, label.get("href")) if label is not None else None
        sub = next(iter(children(li, "ol")), None)
        entries.append(
            TocEntry(
                text_of(label),
                target[0] if target else None,
                target[1] if target else None,
                _nav_list(sub, base) if sub is not None else [],
            )
        )
    return entries


def read_ncx(zf: SafeZip, item: Item) -> list[TocEntry]:
    root = parse_xml(zf.read(item.path), f"{zf.label}: {item.path}")
    nav_map = next(iter(descendants(root, "navMap")), None)
    return _ncx_points(nav_map, item.path) if nav_map is not None else []


def _ncx_points(parent: etree._Element, base: str) -> list[TocEntry]:
    entries = []
    for point in children(parent, "navPoint"):
        label = next(iter(descendants(point, "text")), None)
        content = next(iter(children(point, "content")), None)
        target = resolve_href(base, content.get("src")) if content is not None else None
        entries.append(
            TocEntry(
                text_of(label),
                target[0] if target else None,
                target[1] if target else None,
                _ncx_points(point, base),
            )
        )
    return entries


def _only_in(entry: TocEntry, path: str) -> bool:
    return all(c.path == path and _only_in(c, path) for c in entry.children)


def chapter_entries(entries: list[TocEntry]) -> list[TocEntry]:
    """Flatten the TOC to chapter starts. Sub-entries inside the parent's own document are sections of one
    chapter; sub-entries in other documents make the parent a part and are chapters themselves."""
    out: list[TocEntry] = []
    for entry in entries:
        if entry.path is not None:
            out.append(entry)
        if entry.children and (entry.path is None or not _only_in(entry, entry.path)):
            out.extend(chapter_entries(entry.children))
    return out
