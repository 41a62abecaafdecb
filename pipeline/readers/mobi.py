"""Kindle books without DRM (.mobi, .azw, .azw3, .prc) -> ``Book``.

A MOBI file is a Palm database: record 0 holds the PalmDOC header (compression, text length, encryption),
the MOBI header (text encoding, format version, first image record) and the EXTH metadata (authors,
publisher, description, ISBN, subjects, date, ASIN, language, cover); the records after it hold the book's
markup in 4 KB pieces, each compressed with PalmDOC's LZ77 or not at all. We unpack it ourselves: the pip
package made for this (``mobi``, a fork of KindleUnpack) is GPL-3.0-only, which this project does not take.

- MOBI 6 (and the old half of a KF8 "combination" file): HTML with ``<mbp:pagebreak/>`` between chapters.
- KF8 alone (AZW3): the text flow (the first section of the FDST) holds each XHTML file's skeleton followed
  by its fragments, in reading order; each file, cut at its ``<html``, is read as a chapter candidate.
Each piece goes through the hardened HTML parser and the block extractor the EPUB reader uses (note
references, scripts, images dropped); a piece's first heading is its title; a contents page, and a short first
piece that names the book (its title page), are left out.

Refused in one line: DRM (the encryption field of the PalmDOC header), Topaz files, HUFF/CDIC compression
(not implemented: convert such a book to EPUB), damaged records; at most ``MAX_MOBI_BYTES`` on disk and
``MAX_TEXT_BYTES`` of decompressed text.
"""

from __future__ import annotations

import html
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.models import Book, BookInfo, Chapter
from pipeline.readers.htmltext import Block, extract_blocks, parse_html
from pipeline.textfacts import normalize_paragraph, primary_language

MB = 1024 * 1024
MAX_MOBI_BYTES = 200 * MB
MAX_TEXT_BYTES = 100 * MB
MAX_RECORD_OUT = 64 * 1024  # a text record decompresses to 4 KB (a little more with a multibyte tail)
NO_COMPRESSION, PALMDOC, HUFF_CDIC = 1, 2, 17480
TITLE_PAGE_CHARS = 400  # a first part this short that names the book is its title page
_CONTENTS = re.compile(r"(table of )?contents|目录|目錄|содержание|оглавление|inhalt|table des matières", re.I)
_PAGEBREAK = re.compile(r"<mbp:pagebreak\s*/?>", re.IGNORECASE)
_FILE_START = re.compile(r"(?=<html[\s>])", re.IGNORECASE)


@dataclass(frozen=True)
class _Header:
    compression: int
    text_length: int
    text_records: int
    encryption: int
    encoding: str
    version: int
    first_image: int
    extra_flags: int
    fdst: int
    fdst_count: int
    full_name: str
    exth: dict[int, list[bytes]]


def _records(data: bytes, where: str) -> list[tuple[int, int]]:
    if len(data) < 78:
        raise InputError(f"{where}: not a MOBI book (too short for a Palm database header)")
    (count,) = struct.unpack_from(">H", data, 76)
    if 78 + 8 * count > len(data) or count == 0:
        raise InputError(f"{where}: the MOBI book is damaged (its record list runs past the end of the file)")
    offsets = [struct.unpack_from(">I", data, 78 + 8 * n)[0] for n in range(count)]
    bounds = []
    for n, start in enumerate(offsets):
        end = offsets[n + 1] if n + 1 < count else len(data)
        if not start <= end <= len(data):
            raise InputError(f"{where}: the MOBI book is damaged (record {n} lies outside the file)")
        bounds.append((start, end))
    return bounds


def _exth(rec0: bytes, start: int) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    if rec0[start : start + 4] != b"EXTH" or len(rec0) < start + 12:
        return found
    (count,) = struct.unpack_from(">I", rec0, start + 8)
    pos = start + 12
    for _ in range(min(count, 1000)):
        if pos + 8 > len(rec0):
            break
        kind, size = struct.unpack_from(">II", rec0, pos)
        if size < 8 or pos + size > len(rec0):
            break
        found.setdefault(kind, []).append(rec0[pos + 8 : pos + size])
        pos += size
    return found


def _header(rec0: bytes, where: str) -> _Header:
    if len(rec0) < 16:
        raise InputError(f"{where}: the MOBI book is damaged (record 0 is too short)")
    compression, _, text_length, text_records, _, encryption = struct.unpack_from(">HHIHHH", rec0, 0)
    encoding, version, first_image, extra_flags, fdst, fdst_count = "cp1252", 6, 0, 0, 0, 0
    full_name = ""
    exth: dict[int, list[bytes]] = {}
    if rec0[16:20] == b"MOBI" and len(rec0) >= 132:
        length, _type, codepage = struct.unpack_from(">III", rec0, 20)
        encoding = "utf-8" if codepage == 65001 else "cp1252"
        (version,) = struct.unpack_from(">I", rec0, 36)
        (first_image,) = struct.unpack_from(">I", rec0, 108)
        name_offset, name_length = struct.unpack_from(">II", rec0, 84)
        full_name = rec0[name_offset : name_offset + name_length].decode(encoding, "replace")
        if length >= 0xE4 and len(rec0) >= 0xF4:
            (extra_flags,) = struct.unpack_from(">H", rec0, 0xF2)
        if version >= 8 and len(rec0) >= 0xC8:
            fdst, fdst_count = struct.unpack_from(">II", rec0, 0xC0)
        (exth_flags,) = struct.unpack_from(">I", rec0, 128)
        if exth_flags & 0x40:
            exth = _exth(rec0, 16 + length)
    return _Header(
        compression, text_length, text_records, encryption, encoding, version, first_image, extra_flags,
        fdst, fdst_count, full_name, exth,
    )  # fmt: skip


def _trailing(record: bytes, flags: int) -> int:
    """How many bytes at the end of a text record are not text: one entry per flag bit above bit 0, each
    ending in its own size (a variable-width number read backwards), then the multibyte tail (bit 0)."""
    size = 0
    for bit in range(1, 16):
        if flags & (1 << bit):
            value, shift = 0, 0
            for byte in reversed(record[max(0, len(record) - size - 4) : len(record) - size]):
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte & 0x80:
                    break
            size += value
    if flags & 1 and len(record) > size:
        size += (record[len(record) - size - 1] & 0x3) + 1
    return min(size, len(record))


def palmdoc_decompress(data: bytes) -> bytes:
    """PalmDOC's LZ77: literals, runs of raw bytes, back-references of 3-10 bytes, space + character pairs."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        i += 1
        if c == 0 or 0x09 <= c <= 0x7F:
            out.append(c)
        elif c <= 0x08:
            out += data[i : i + c]
            i += c
        elif c >= 0xC0:
            out += bytes((0x20, c ^ 0x80))
        else:
            if i >= n:
                raise ValueError("a back-reference cut short")
            pair = (c << 8) | data[i]
            i += 1
            distance, length = (pair >> 3) & 0x7FF, (pair & 0x7) + 3
            if distance == 0 or distance > len(out):
                raise ValueError("a back-reference before the start of the text")
            for _ in range(length):
                out.append(out[-distance])
        if len(out) > MAX_RECORD_OUT:
            raise ValueError("a record that expands past any real one")
    return bytes(out)


def _text(data: bytes, bounds: list[tuple[int, int]], head: _Header, where: str) -> bytes:
    if head.compression == HUFF_CDIC:
        raise InputError(
            f"{where}: the MOBI book is compressed with HUFF/CDIC, which we do not unpack; convert it to EPUB first"
        )
    if head.compression not in (NO_COMPRESSION, PALMDOC):
        raise InputError(
            f"{where}: the MOBI book uses an unknown compression ({head.compression}); the file is damaged"
        )
    if head.text_records >= len(bounds):
        raise InputError(f"{where}: the MOBI book is damaged (it names more text records than it holds)")
    parts: list[bytes] = []
    total = 0
    for n in range(1, head.text_records + 1):
        start, end = bounds[n]
        record = data[start:end]
        record = record[: len(record) - _trailing(record, head.extra_flags)]
        try:
            text = palmdoc_decompress(record) if head.compression == PALMDOC else record
        except ValueError as exc:
            raise InputError(f"{where}: the MOBI book is damaged (text record {n}: {exc})") from None
        total += len(text)
        if total > MAX_TEXT_BYTES:
            raise InputError(f"{where}: more than {MAX_TEXT_BYTES // MB} MB of text; refusing it")
        parts.append(text)
    text = b"".join(parts)
    return text[: head.text_length] if head.text_length else text


def _flow0(text: bytes, data: bytes, bounds: list[tuple[int, int]], head: _Header) -> bytes:
    """KF8: the text flow only (the FDST's first section); CSS and SVG flows follow it."""
    if head.version < 8 or not 0 < head.fdst < len(bounds):
        return text
    start, end = bounds[head.fdst]
    fdst = data[start:end]
    if fdst[:4] != b"FDST" or len(fdst) < 20:
        return text
    _, sections = struct.unpack_from(">II", fdst, 4)
    if sections < 2:
        return text
    _, flow_end = struct.unpack_from(">II", fdst, 12)
    return text[:flow_end]


def _pieces(markup: str, kf8: bool) -> list[str]:
    parts = _FILE_START.split(markup) if kf8 else _PAGEBREAK.split(markup)
    return [p for p in parts if re.sub(r"<\?xml[^>]*\?>", "", p).strip()]


def _key(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _by_headings(blocks: list[Block], title: str) -> list[tuple[str, list[Block]]]:
    levels = [b.heading for b in blocks if 1 <= b.heading <= 3]
    level = next((lv for lv in (1, 2, 3) if levels.count(lv) >= 2), None)
    groups: list[tuple[str, list[Block]]] = [(title, [])]
    for block in blocks:
        if level is not None and block.heading == level:
            groups.append((block.text, []))
        else:
            groups[-1][1].append(block)
    return [(t, b) for t, b in groups if b]


def _first(exth: dict[int, list[bytes]], kind: int, encoding: str) -> str | None:
    for value in exth.get(kind, []):
        text = normalize_paragraph(value.decode(encoding, "replace"))
        if text:
            return text
    return None


def _cover(data: bytes, bounds: list[tuple[int, int]], head: _Header) -> tuple[bytes | None, str | None]:
    offsets = head.exth.get(201, [])
    if not offsets or len(offsets[0]) != 4 or not head.first_image:
        return None, None
    index = head.first_image + struct.unpack(">I", offsets[0])[0]
    if not 0 < index < len(bounds):
        return None, None
    start, end = bounds[index]
    image = data[start:end]
    if image.startswith(b"\xff\xd8\xff"):
        return image, "image/jpeg"
    if image.startswith(b"\x89PNG\r\n\x1a\n"):
        return image, "image/png"
    return None, None


def read_mobi(path: Path, *, include_matter: bool = False) -> Book:
    """Read a MOBI/AZW/AZW3 book without DRM. Raises InputError, one line, for what cannot be read."""
    where = path.name
    size = path.stat().st_size
    if size > MAX_MOBI_BYTES:
        raise InputError(f"{where}: {size // MB} MB is too large for a Kindle book (limit {MAX_MOBI_BYTES // MB} MB)")
    data = path.read_bytes()
    if data[:3] == b"TPZ":
        raise InputError(f"{where}: a Topaz Kindle book (scanned pages, usually with DRM); we cannot read it")
    if data[60:68] not in (b"BOOKMOBI", b"TEXtREAd"):
        raise InputError(f"{where}: not a MOBI book (no BOOKMOBI signature)")
    bounds = _records(data, where)
    head = _header(data[bounds[0][0] : bounds[0][1]], where)
    if head.encryption:
        raise InputError(
            f"{where}: the Kindle book is DRM-protected (encryption type {head.encryption}); use a DRM-free copy"
        )
    raw_text = _flow0(_text(data, bounds, head, where), data, bounds, head)
    markup = raw_text.decode(head.encoding, "replace")
    if data[60:68] == b"TEXtREAd":  # a plain PalmDOC e-text: paragraphs between blank lines, no markup
        paragraphs = re.split(r"\n\s*\n", markup.replace("\r\n", "\n"))
        markup = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p.strip())
    kf8 = head.version >= 8
    exth = head.exth
    palm_name = normalize_paragraph(data[:32].split(b"\0", 1)[0].decode(head.encoding, "replace").replace("_", " "))
    title = _first(exth, 503, head.encoding) or normalize_paragraph(head.full_name) or palm_name or path.stem
    groups: list[tuple[str | None, list[Block]]] = []
    pieces = _pieces(markup, kf8)
    for n, piece in enumerate(pieces, start=1):
        blocks = list(extract_blocks(parse_html(piece, f"{where} (part {n})"), where).blocks)
        heading = next((b for b in blocks if b.heading), None)
        groups.append((heading.text if heading else None, blocks))
    if len(groups) == 1:
        groups = list(_by_headings(groups[0][1], title))
    chapters: list[Chapter] = []
    skipped: list[str] = []
    for n, (found, blocks) in enumerate(groups):
        if found and _CONTENTS.fullmatch(found.strip()) and not include_matter:
            skipped.append(f"{found} (contents)")
            continue
        chars = sum(len(b.text) for b in blocks)
        named = _key(title) in _key(" ".join(b.text for b in blocks))
        if n == 0 and len(groups) > 1 and chars <= TITLE_PAGE_CHARS and named and not include_matter:
            skipped.append(f"{found or title} (title page)")
            continue
        name = found or f"Chapter {len(chapters) + 1}"
        # The heading that named the chapter is spoken as its title, not again as its first line.
        while blocks and blocks[0].heading and _key(blocks[0].text) == _key(name):
            blocks = blocks[1:]
        if blocks:
            chapters.append(Chapter(len(chapters) + 1, name, tuple(b.text for b in blocks)))
    if not chapters:
        raise InputError(f"{where}: the Kindle book holds no readable text")
    authors = [normalize_paragraph(a.decode(head.encoding, "replace")) for a in exth.get(100, [])]
    subjects = tuple(normalize_paragraph(s.decode(head.encoding, "replace")) for s in exth.get(105, []))
    description = _first(exth, 103, head.encoding)
    if description and "<" in description:
        description = "\n\n".join(b.text for b in extract_blocks(parse_html(description, where), where).blocks)
    cover, cover_mime = _cover(data, bounds, head)
    return Book(
        title=title,
        chapters=tuple(chapters),
        author=", ".join(a for a in authors if a) or None,
        language=primary_language(_first(exth, 524, head.encoding)),
        cover=cover,
        cover_mime=cover_mime,
        source=path,
        skipped=tuple(skipped),
        info=BookInfo(
            description=description or None,
            publisher=_first(exth, 101, head.encoding),
            date=_first(exth, 106, head.encoding),
            subjects=tuple(s for s in subjects if s),
            isbn=_first(exth, 104, head.encoding),
            asin=_first(exth, 113, head.encoding),
        ),
    )
