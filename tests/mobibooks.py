"""MOBI books built by hand for the MOBI reader's tests: no pip package writes MOBI files (kindlegen and
Calibre are programs, not pip packages), so this writes the Palm database, the PalmDOC and MOBI headers, EXTH
metadata, text records (uncompressed or PalmDOC-compressed, with trailing entries) and an image record, as
the MOBI format describes them. A KF8 (AZW3) variant puts an FDST with a text flow and a CSS flow."""

from __future__ import annotations

import struct


def palmdoc_compress(data: bytes) -> bytes:
    """PalmDOC LZ77: back-references to 3-10 bytes within 2047 back, space + character pairs, literals, and
    runs of raw bytes for what cannot be a literal (NUL, 0x01-0x08, bytes over 0x7f)."""
    out = bytearray()
    seen: dict[bytes, list[int]] = {}  # where each 3-byte sequence occurred, latest last
    i = 0
    while i < len(data):
        best_len, best_dist = 0, 0
        for start in reversed(seen.get(data[i : i + 3], [])[-16:]):
            dist = i - start
            if dist > 2047:
                break
            length = 0
            while length < 10 and i + length < len(data) and data[start + length] == data[i + length]:
                length += 1
            if length > best_len:
                best_len, best_dist = length, dist
        for j in range(i, i + max(best_len, 1) if best_len >= 3 else i + 1):
            seen.setdefault(data[j : j + 3], []).append(j)
        if best_len >= 3:
            pair = 0x8000 | (best_dist << 3) | (best_len - 3)
            out += struct.pack(">H", pair)
            i += best_len
            continue
        c = data[i]
        if c == 0x20 and i + 1 < len(data) and 0x40 <= data[i + 1] <= 0x7F:
            out.append(data[i + 1] ^ 0x80)
            i += 2
        elif c == 0 or 0x09 <= c <= 0x7F:
            out.append(c)
            i += 1
        else:
            run = data[i : i + 8]
            cut = next((n for n, b in enumerate(run) if 0x09 <= b <= 0x7F), len(run)) or 1
            out.append(cut)
            out += data[i : i + cut]
            i += cut
    return bytes(out)


def exth(entries: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack(">II", kind, len(value) + 8) + value for kind, value in entries)
    record = b"EXTH" + struct.pack(">II", 12 + len(body), len(entries)) + body
    return record + b"\0" * (-len(record) % 4)


def mobi_file(
    markup: str,
    *,
    title: str = "The Lantern Keeper",
    metadata: list[tuple[int, str | bytes]] | None = None,
    compress: bool = True,
    encryption: int = 0,
    cover: bytes | None = None,
    version: int = 6,
    css: str | None = None,
    trailing: bool = True,
    palmdoc: bool = False,
) -> bytes:
    """A MOBI book holding ``markup``; with ``palmdoc``, a plain PalmDOC e-text (TEXtREAd: no MOBI header)."""
    text = markup.encode("utf-8")
    flow_end = len(text)
    if css is not None:
        text += css.encode("utf-8")
    chunks = [text[i : i + 4096] for i in range(0, len(text), 4096)]
    records: list[bytes] = []
    for chunk in chunks:
        body = palmdoc_compress(chunk) if compress else chunk
        if trailing:
            # One trailing entry (flag bit 1): three bytes of junk ending in its own size, 4, with the high bit.
            body += b"\x11\x22\x33" + bytes([0x80 | 4])
        records.append(body)
    first_image = 1 + len(records)
    images = [cover] if cover else []
    fdst_index = first_image + len(images)
    if version >= 8:
        sections = [(0, flow_end), (flow_end, len(text))]
        fdst = b"FDST" + struct.pack(">II", 12, len(sections)) + b"".join(struct.pack(">II", *s) for s in sections)
    entries: list[tuple[int, bytes]] = [(k, v.encode() if isinstance(v, str) else v) for k, v in metadata or []]
    if cover:
        entries.append((201, struct.pack(">I", 0)))
    name = title.encode("utf-8")
    header_length = 0xE8
    mobi = bytearray(16 + header_length)
    struct.pack_into(">HHIHHHH", mobi, 0, 2 if compress else 1, 0, len(text), len(records), 4096, encryption, 0)
    struct.pack_into(">4sIII", mobi, 16, b"MOBI", header_length, 2, 65001)
    struct.pack_into(">I", mobi, 36, version)
    struct.pack_into(">I", mobi, 80, first_image)  # first non-book record
    struct.pack_into(">I", mobi, 108, first_image)
    struct.pack_into(">I", mobi, 128, 0x40 if entries else 0)
    struct.pack_into(">H", mobi, 0xF2, 0b10 if trailing else 0)
    if version >= 8:
        struct.pack_into(">II", mobi, 0xC0, fdst_index, 2)
    ext = exth(entries) if entries else b""
    struct.pack_into(">II", mobi, 84, len(mobi) + len(ext), len(name))
    rec0 = bytes(mobi) + ext + name + b"\0\0"
    if palmdoc:
        rec0 = bytes(mobi[:16])
    all_records = [rec0, *records, *images, *([fdst] if version >= 8 else [])]
    header = bytearray(78)
    header[: len(title[:31].encode())] = title[:31].encode()
    header[60:68] = b"TEXtREAd" if palmdoc else b"BOOKMOBI"
    struct.pack_into(">H", header, 76, len(all_records))
    offset = 78 + 8 * len(all_records) + 2
    table = bytearray()
    for n, record in enumerate(all_records):
        table += struct.pack(">II", offset, n)
        offset += len(record)
    return bytes(header) + bytes(table) + b"\0\0" + b"".join(all_records)
