"""The files beside a book's audio that libraries and players read: ``cover.jpg``, ``metadata.json``
(Audiobookshelf's own schema: server/utils/generators/abmetadataGenerator.js), ``desc.txt``, ``reader.txt``
and an OPF (``metadata.opf``, as calibre writes them). Audiobookshelf ranks them over the audio tags
(weakest first: folder name, tags, desc.txt/reader.txt, OPF, metadata.json), so each says the same."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lxml import etree

from pipeline import covers
from pipeline.bookmeta import genres, narrator
from pipeline.files import atomic_write
from pipeline.models import Book
from pipeline.options import BookOptions

COVER = "cover.jpg"
METADATA_JSON = "metadata.json"
DESC = "desc.txt"
READER = "reader.txt"
OPF = "metadata.opf"

_DC = "http://purl.org/dc/elements/1.1/"
# What XML 1.0 cannot carry (control characters a title may hold): left out of the OPF.
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_OPF = "http://www.idpf.org/2007/opf"


def abs_metadata(book: Book, options: BookOptions) -> dict[str, Any]:
    """``metadata.json`` as Audiobookshelf reads it. Series as "Name #1" strings (its parseSeriesString);
    an empty list where the book has none, so it never takes a volume name in the grouping tag for a series."""
    info = book.info
    series = []
    if info.series:
        series = [f"{info.series} #{info.series_index}" if info.series_index else info.series]
    year = (info.date or "")[:4]
    return {
        "title": book.title,
        "subtitle": None,
        "authors": [book.author] if book.author else [],
        "narrators": [narrator(options)],
        "series": series,
        "genres": list(genres(book, options)),
        "publishedYear": year if year.isdigit() else None,
        "publishedDate": info.date,
        "publisher": info.publisher,
        "description": info.description,
        "isbn": info.isbn,
        "asin": info.asin,
        "language": options.language or book.language,
        "explicit": False,
        "abridged": False,
        "tags": [],
    }


def opf(book: Book, options: BookOptions) -> bytes:
    """An OPF 2.0 package document holding only metadata."""
    info = book.info
    nsmap = {None: _OPF, "dc": _DC, "opf": _OPF}
    root = etree.Element(f"{{{_OPF}}}package", nsmap=nsmap, version="2.0", attrib={"unique-identifier": "id"})
    meta = etree.SubElement(root, f"{{{_OPF}}}metadata")

    def dc(name: str, text: str | None, **attrs: str) -> None:
        text = _XML_UNSAFE.sub("", text or "")
        if text:
            el = etree.SubElement(meta, f"{{{_DC}}}{name}", {f"{{{_OPF}}}{k}": v for k, v in attrs.items()})
            el.text = text

    dc("title", book.title)
    dc("creator", book.author, role="aut")
    dc("creator", narrator(options), role="nrt")
    dc("description", info.description)
    dc("publisher", info.publisher)
    dc("date", info.date)
    dc("language", options.language or book.language)
    for subject in info.subjects:
        dc("subject", subject)
    dc("identifier", info.isbn, scheme="ISBN")
    dc("identifier", info.asin, scheme="ASIN")
    if info.series:
        series = _XML_UNSAFE.sub("", info.series)
        etree.SubElement(meta, f"{{{_OPF}}}meta", name="calibre:series", content=series)
        if info.series_index:
            index = _XML_UNSAFE.sub("", info.series_index)
            etree.SubElement(meta, f"{{{_OPF}}}meta", name="calibre:series_index", content=index)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)


def _write(path: Path, data: bytes | str) -> None:
    """Atomically, and only when it changes: a rerun of an unchanged book rewrites nothing."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == blob:
            return
    except OSError:
        pass
    atomic_write(path, blob)


def write_book_files(folder: Path, book: Book, options: BookOptions) -> tuple[str, ...]:
    """Write them all into ``folder`` (each atomically, only when changed); returns the names written."""
    written = []
    if book.cover:
        try:  # a JPEG already when the book was read (bookmeta); a caller that set another picture gets it converted
            _write(folder / COVER, covers.to_jpeg(book.cover, book.cover_mime))
            written.append(COVER)
        except covers.CoverError:
            pass  # the tags carry what the book had; no cover.jpg rather than a broken one
    data = json.dumps(abs_metadata(book, options), ensure_ascii=False, indent=2) + "\n"
    _write(folder / METADATA_JSON, data)
    written.append(METADATA_JSON)
    if book.info.description:
        _write(folder / DESC, book.info.description + "\n")
        written.append(DESC)
    else:
        (folder / DESC).unlink(missing_ok=True)
    _write(folder / READER, narrator(options) + "\n")
    written.append(READER)
    _write(folder / OPF, opf(book, options))
    written.append(OPF)
    return tuple(written)
